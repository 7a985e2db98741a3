package upload

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
)

// Post sends an archive of size bytes to a presigned upload the way S3
// wants it: a multipart/form-data POST of the fields, then the archive as
// "file", with a Content-Length (S3 takes no chunked POST). A refusal
// (EntityTooLarge, an expired policy) is an error with S3's code and
// message.
func Post(ctx context.Context, hc *http.Client, url string, fields map[string]string, archive io.Reader, size int64) error {
	var head bytes.Buffer
	mw := multipart.NewWriter(&head)
	// S3 wants every field before the file; their order among
	// themselves does not matter, but a fixed one is easier to debug.
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if err := mw.WriteField(k, fields[k]); err != nil {
			return fmt.Errorf("upload: form: %w", err)
		}
	}
	if _, err := mw.CreateFormFile("file", "source.tar.gz"); err != nil {
		return fmt.Errorf("upload: form: %w", err)
	}
	tail := "\r\n--" + mw.Boundary() + "--\r\n"
	body := io.MultiReader(&head, io.LimitReader(archive, size), strings.NewReader(tail))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	req.ContentLength = int64(head.Len()) + size + int64(len(tail))
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("upload: post: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var s3err struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)) // only for the message
	if xml.Unmarshal(raw, &s3err) != nil || s3err.Code == "" {
		return fmt.Errorf("upload: post: %s", resp.Status)
	}
	return fmt.Errorf("upload: post: %s: %s: %s", resp.Status, s3err.Code, s3err.Message)
}
