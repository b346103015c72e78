package deploy

// The daemon image a release build of the plugin installs, stamped with -ldflags "-X
// github.com/isoobs/isoobs/deploy.DaemonImageDigest=sha256:..." (the Makefile passes the index
// digest `make image` wrote to dist/image/index-digest). Empty in a plain `go build`: the chart's
// own default (repository:appVersion) applies.
var (
	// DaemonImageRepository overrides the chart's image.repository when set.
	DaemonImageRepository = ""
	// DaemonImageTag is the image's tag (the version); the chart ignores it when a digest is set.
	DaemonImageTag = ""
	// DaemonImageDigest is the image index digest the chart pins (image.digest).
	DaemonImageDigest = ""
)

// DaemonImageValues returns the chart's image values this binary was stamped with, or nil.
func DaemonImageValues() map[string]any {
	v := map[string]any{}
	if DaemonImageRepository != "" {
		v["repository"] = DaemonImageRepository
	}
	if DaemonImageTag != "" {
		v["tag"] = DaemonImageTag
	}
	if DaemonImageDigest != "" {
		v["digest"] = DaemonImageDigest
	}
	if len(v) == 0 {
		return nil
	}
	return v
}
