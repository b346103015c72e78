package image

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Annotations containerd's importer names images by (`ctr images import`).
const (
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

// WriteOCILayout writes idx as a new OCI image layout in dir (which must not hold one yet). For
// each tag (REPOSITORY:TAG) index.json lists idx twice, named REPOSITORY:TAG and
// REPOSITORY@<idx digest>: containerd's CRI resolves an image only by a name it has, and the
// chart's default reference is the digest one.
func WriteOCILayout(dir string, idx v1.ImageIndex, tags ...string) error {
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if len(tags) == 0 {
		return p.AppendIndex(idx)
	}
	for _, t := range tags {
		tag, err := name.NewTag(t, name.StrictValidation)
		if err != nil {
			return fmt.Errorf("image: %q: %w", t, err)
		}
		if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
			annotationImageName: tag.Name(),
			annotationRefName:   tag.TagStr(),
		})); err != nil {
			return err
		}
		if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
			annotationImageName: tag.Context().Digest(d.String()).Name(),
		})); err != nil {
			return err
		}
	}
	return nil
}

// WriteOCIArchive writes idx as an OCI layout tar (see WriteOCILayout and TarDir).
func WriteOCIArchive(path string, idx v1.ImageIndex, tags ...string) error {
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".oci-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "layout")
	if err := WriteOCILayout(dir, idx, tags...); err != nil {
		return err
	}
	return TarDir(dir, path)
}

// TarDir writes the tree under dir to a tar at path (replacing it): entries sorted, dated
// 1970-01-01, owned by 0:0, modes 0755 (directories) and 0644, so equal trees give equal bytes.
func TarDir(dir, path string) error {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return fmt.Errorf("image: %s is not a regular file", p)
		}
		names = append(names, p)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, p := range names {
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: rel, ModTime: time.Unix(0, 0), Mode: 0o644, Typeflag: tar.TypeReg, Size: st.Size()}
		if st.IsDir() {
			h.Name, h.Mode, h.Typeflag, h.Size = rel+"/", 0o755, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if st.IsDir() {
			continue
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, src)
		src.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// WriteDockerArchive writes img as a docker-archive tar (`docker load`, `ctr images import`)
// tagged tag (REPOSITORY:TAG), replacing path.
func WriteDockerArchive(path, tag string, img v1.Image) error {
	t, err := name.NewTag(tag, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("image: %q: %w", tag, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	defer os.Remove(tmp)
	if err := tarball.MultiRefWriteToFile(tmp, map[name.Reference]v1.Image{t: img}); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
