// Command isoobs-release builds a kubectl-isoobs release into dist/release: one tar.gz per
// platform, checksums.txt and the krew manifest (`make release VERSION=vX.Y.Z` runs it).
// See package release for what each file holds.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/isoobs/isoobs/krew"
	"github.com/isoobs/isoobs/release"
)

func main() {
	var (
		o               release.Options
		date            string
		platforms       string
		imageDigestFile string
		allowDirty      bool
		preflight       bool
	)
	var defaultPlatforms []string
	for _, p := range release.DefaultPlatforms {
		defaultPlatforms = append(defaultPlatforms, p.String())
	}
	flag.StringVar(&o.RepoRoot, "repo-root", ".", "the isoobs module's root")
	flag.StringVar(&o.Version, "version", "", "release version, vX.Y.Z[-pre] (required)")
	flag.StringVar(&o.Commit, "commit", "", "full git commit (default: HEAD of -repo-root)")
	flag.StringVar(&date, "date", "", "build date, RFC 3339 (default: the commit's time, so builds are reproducible)")
	flag.StringVar(&platforms, "platforms", strings.Join(defaultPlatforms, ","), "comma-separated os/arch list")
	flag.StringVar(&o.OutDir, "out", "dist/release", "output directory")
	flag.StringVar(&imageDigestFile, "image-digest-file", "dist/image/index-digest",
		"the daemon image's index digest written by `make image`, stamped into the plugin so install pins it (missing file: not stamped, with a warning)")
	flag.StringVar(&o.ImageRepository, "image-repository", "ghcr.io/isoobs/isoobs-daemon", "the daemon image's repository (as given to `make image`)")
	flag.StringVar(&o.DownloadBase, "download-base", release.DefaultDownloadBase, "URI prefix of the archives in the krew manifest (<base>/<version>/<archive>)")
	flag.BoolVar(&allowDirty, "allow-dirty", false, "build from a work tree with uncommitted changes (the binaries then do not match -commit)")
	flag.BoolVar(&preflight, "preflight", false, "only check -version and the work tree, build nothing (make release runs this before make image)")
	flag.Parse()

	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "isoobs-release: "+format+"\n", args...) }
	fail := func(err error) {
		logf("%v", err)
		os.Exit(1)
	}
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected arguments %q", flag.Args()))
	}
	if err := release.ValidVersion(o.Version); err != nil {
		fail(err)
	}
	var err error
	if o.Platforms, err = release.ParsePlatforms(platforms); err != nil {
		fail(err)
	}
	if err := gitDefaults(&o, &date, allowDirty); err != nil {
		fail(err)
	}
	if o.Date, err = time.Parse(time.RFC3339, date); err != nil {
		fail(fmt.Errorf("-date: %w", err))
	}
	if preflight {
		return
	}
	if b, err := os.ReadFile(imageDigestFile); err == nil {
		o.ImageDigest = strings.TrimSpace(string(b))
		// The image builder writes the tag it used beside the digest: a plugin must not pin an
		// image built for another version.
		if v, err := os.ReadFile(filepath.Join(filepath.Dir(imageDigestFile), "version")); err == nil && strings.TrimSpace(string(v)) != o.Version {
			fail(fmt.Errorf("%s is the image of version %s, not %s: run `make image VERSION=%s` (make release does)",
				imageDigestFile, strings.TrimSpace(string(v)), o.Version, o.Version))
		}
	} else if errors.Is(err, os.ErrNotExist) {
		logf("warning: no %s (run `make image`): the plugin will install the chart's default daemon image, not one pinned by digest", imageDigestFile)
	} else {
		fail(err)
	}
	o.ManifestTemplate = krew.ManifestTemplate
	o.Log = logf

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	res, err := release.Build(ctx, o)
	if err != nil {
		fail(err)
	}
	for _, a := range res.Artifacts {
		fmt.Printf("%s  %s  %.1f MiB\n", a.SHA256, a.Path, float64(a.Size)/(1<<20))
	}
	fmt.Printf("%s\n%s\n", res.Checksums, res.Manifest)
	logf("%s (commit %.12s, %s, image %s) in %.1fs", o.Version, o.Commit, date, orNone(o.ImageDigest), time.Since(start).Seconds())
}

// gitDefaults fills the commit and its time from git and refuses a dirty tree unless allowed:
// a release must be rebuildable from its commit.
func gitDefaults(o *release.Options, date *string, allowDirty bool) error {
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = o.RepoRoot
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, ee.Stderr)
			}
			return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	if o.Commit == "" {
		c, err := git("rev-parse", "HEAD")
		if err != nil {
			return err
		}
		o.Commit = c
	}
	if *date == "" {
		ct, err := git("show", "-s", "--format=%ct", o.Commit)
		if err != nil {
			return err
		}
		sec, err := strconv.ParseInt(ct, 10, 64)
		if err != nil {
			return fmt.Errorf("commit time %q: %w", ct, err)
		}
		*date = time.Unix(sec, 0).UTC().Format(time.RFC3339)
	}
	if allowDirty {
		return nil
	}
	status, err := git("status", "--porcelain") // dist/ is in .gitignore
	if err != nil {
		return err
	}
	if status != "" {
		n := strings.Count(status, "\n") + 1
		return fmt.Errorf("the work tree has %d uncommitted change(s) (git status): commit them, or pass -allow-dirty (make release ALLOW_DIRTY=1) for a build that does not match commit %.12s", n, o.Commit)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
