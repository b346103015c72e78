package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one entry of an image's only layer.
type File struct {
	// Path is absolute inside the image, e.g. /usr/local/bin/dnsgen.
	Path string
	// Source is a host file to copy; Data is used when Source is empty.
	Source string
	Data   []byte
	// Mode holds the permission bits, fs.ModeSticky and fs.ModeDir (an empty directory).
	// 0 means 0644 for a file, 0755 for a directory.
	Mode fs.FileMode
}

// Spec describes a single-layer image made of local files.
type Spec struct {
	Platform v1.Platform
	// Files of the layer. Parent directories are added (0755); BaseFiles are always added.
	Files      []File
	Entrypoint []string
	Cmd        []string
	// Env defaults to PATH=DefaultPath; WorkingDir to "/".
	Env        []string
	WorkingDir string
	User       string
	Labels     map[string]string
	// Created dates the config, its history and every file. Required: it makes builds reproducible.
	Created time.Time
	// CreatedBy goes into the layer's history entry.
	CreatedBy string
}

// DefaultPath is the PATH of the images' environment.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// BaseFiles are in every image FromFiles makes: users and groups root and nobody (for tools that
// look the current uid up), a host lookup order for Go's resolver, and a world-writable /tmp.
var BaseFiles = []File{
	{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")},
	{Path: "/etc/group", Data: []byte("root:x:0:\nnobody:x:65534:\n")},
	{Path: "/etc/nsswitch.conf", Data: []byte("hosts: files dns\n")},
	{Path: "/tmp", Mode: 0o777 | fs.ModeDir | fs.ModeSticky},
}

// FromFiles makes a single-layer image of Spec.Files plus BaseFiles, with an OCI manifest and
// config. The layer's entries are sorted, owned by 0:0 and dated Spec.Created; the gzip stream
// has no name or time, so the same files give the same digest.
func FromFiles(s Spec) (v1.Image, error) {
	if s.Created.IsZero() {
		return nil, fmt.Errorf("image: Spec.Created is required")
	}
	if s.Platform.OS == "" || s.Platform.Architecture == "" {
		return nil, fmt.Errorf("image: Spec.Platform needs OS and Architecture")
	}
	created := s.Created.UTC().Truncate(time.Second)
	layerTar, err := layerTar(append(append([]File(nil), BaseFiles...), s.Files...), created)
	if err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	// Level 6: 1 % larger than level 9 on the daemon, a third of the time.
	zw, err := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(layerTar); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	compressed := gz.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(compressed)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}

	env := s.Env
	if len(env) == 0 {
		env = []string{"PATH=" + DefaultPath}
	}
	wd := s.WorkingDir
	if wd == "" {
		wd = "/"
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: s.CreatedBy},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant, cf.OSVersion = s.Platform.OS, s.Platform.Architecture, s.Platform.Variant, s.Platform.OSVersion
	cf.Created = v1.Time{Time: created}
	cf.Config = v1.Config{
		Entrypoint: s.Entrypoint,
		Cmd:        s.Cmd,
		Env:        env,
		WorkingDir: wd,
		User:       s.User,
		Labels:     s.Labels,
	}
	return mutate.ConfigFile(img, cf)
}

// Index makes an OCI image index of images, each descriptor carrying its config's platform.
func Index(imgs ...v1.Image) (v1.ImageIndex, error) {
	var adds []mutate.IndexAddendum
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		p := cf.Platform()
		if p == nil {
			return nil, fmt.Errorf("image: an image of the index has no platform")
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	return mutate.AppendManifests(idx, adds...), nil
}

// layerTar writes files (and their parents) as an uncompressed tar, sorted by path.
func layerTar(files []File, mtime time.Time) ([]byte, error) {
	entries := map[string]File{}
	for _, f := range files {
		p := path.Clean("/" + f.Path)
		if p == "/" || !strings.HasPrefix(f.Path, "/") {
			return nil, fmt.Errorf("image: file path %q must be absolute and not /", f.Path)
		}
		if _, dup := entries[p]; dup {
			return nil, fmt.Errorf("image: %s given twice", p)
		}
		f.Path = p
		entries[p] = f
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if e, ok := entries[d]; ok && !e.Mode.IsDir() {
				return nil, fmt.Errorf("image: %s is a file and a parent of %s", d, p)
			}
		}
	}
	// Parents not given explicitly.
	for p := range entries {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = File{Path: d, Mode: 0o755 | fs.ModeDir}
			}
		}
	}
	names := make([]string, 0, len(entries))
	for p := range entries {
		names = append(names, p)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range names {
		f := entries[p]
		h := &tar.Header{
			Name:    strings.TrimPrefix(p, "/"),
			ModTime: mtime,
			Uid:     0,
			Gid:     0,
		}
		perm := int64(f.Mode.Perm())
		if f.Mode&fs.ModeSticky != 0 {
			perm |= 0o1000
		}
		if f.Mode.IsDir() {
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
			if f.Mode.Perm() == 0 {
				perm |= 0o755
			}
			h.Mode = perm
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
			continue
		}
		data := f.Data
		if f.Source != "" {
			var err error
			if data, err = os.ReadFile(f.Source); err != nil {
				return nil, fmt.Errorf("image: %s: %w", p, err)
			}
		}
		if f.Mode.Perm() == 0 {
			perm |= 0o644
		}
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, perm, int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
