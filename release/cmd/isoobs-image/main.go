// Command isoobs-image builds the isoobs daemon's image index (linux/amd64 and linux/arm64)
// without a Docker daemon: `make image` runs it. See package release/image for the files.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/isoobs/isoobs/release/image"
)

func main() {
	var (
		o         image.Options
		date      string
		platforms string
	)
	flag.StringVar(&o.RepoRoot, "repo-root", ".", "the isoobs module's root")
	flag.StringVar(&o.Version, "version", "", "version stamped into the daemon and used as the image tag (git describe)")
	flag.StringVar(&o.Commit, "commit", "", "full git commit")
	flag.StringVar(&date, "date", "", "the commit's time, RFC 3339 (dates the files and the config)")
	flag.StringVar(&o.Repository, "repository", image.DefaultRepository, "image repository")
	flag.StringVar(&platforms, "platforms", strings.Join(image.DefaultPlatforms, ","), "comma-separated os/arch list")
	flag.StringVar(&o.OutDir, "out", "dist/image", "output directory")
	flag.Parse()

	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "isoobs-image:", err)
		os.Exit(1)
	}
	if o.Version == "" || o.Commit == "" || date == "" {
		fail(fmt.Errorf("-version, -commit and -date are required"))
	}
	d, err := time.Parse(time.RFC3339, date)
	if err != nil {
		fail(fmt.Errorf("-date: %w", err))
	}
	o.Date = d
	o.Platforms = strings.Split(platforms, ",")
	start := time.Now()
	o.Log = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "isoobs-image: [%5.1fs] "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := image.Build(ctx, o)
	if err != nil {
		fail(err)
	}
	fmt.Printf("%s\n%s\n", res.Tag, res.Reference)
	for _, pi := range res.Images {
		fmt.Printf("  %-12s %s  %.1f MiB compressed  %s\n", pi.Platform, pi.ManifestDigest, float64(pi.CompressedSize)/(1<<20), pi.DockerArchive)
	}
	fmt.Printf("  OCI layout %s, %s; digest in %s (%.1fs)\n", res.LayoutDir, res.OCIArchive, res.DigestFile, time.Since(start).Seconds())
}
