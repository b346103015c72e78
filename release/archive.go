package release

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"time"
)

// ArchiveFile is one regular file of an archive.
type ArchiveFile struct {
	Name string // a plain file name, no directories
	Mode fs.FileMode
	Data []byte
}

// WriteArchive writes files as a tar.gz whose bytes depend only on the files and mtime: entries
// sorted by name, owned by 0:0 without user or group names, all dated mtime (whole seconds),
// USTAR headers (no PAX access times), and a gzip header without file name or time.
func WriteArchive(w io.Writer, mtime time.Time, files []ArchiveFile) error {
	files = append([]ArchiveFile(nil), files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	for i, f := range files {
		if f.Name == "" || strings.ContainsAny(f.Name, `/\`) || f.Name == "." || f.Name == ".." {
			return fmt.Errorf("archive entry %q: want a plain file name", f.Name)
		}
		if i > 0 && files[i-1].Name == f.Name {
			return fmt.Errorf("archive entry %q twice", f.Name)
		}
	}
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	// gzip.Writer's zero Header already has no Name and ModTime 0; OS is always 255 (unknown).
	tw := tar.NewWriter(zw)
	for _, f := range files {
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     f.Name,
			Mode:     int64(f.Mode.Perm()),
			Size:     int64(len(f.Data)),
			ModTime:  mtime.UTC().Truncate(time.Second),
			Format:   tar.FormatUSTAR,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("archive entry %s: %w", f.Name, err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}
