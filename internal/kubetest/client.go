package kubetest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// Do sends a request to the API server with a bearer token (AdminToken,
// UserToken, or one the API server issued) and returns the status code
// and body. body, if not nil, is sent as JSON; a PATCH's as a JSON merge
// patch, the one patch type that is plain JSON and that every kind takes.
func (c *ControlPlane) Do(method, path, token string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.URL()+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	contentType := "application/json"
	if method == http.MethodPatch {
		contentType = "application/merge-patch+json"
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Create posts obj to path as the admin and returns the object as the API
// server stored it (with its uid, defaults and status); anything but 201
// Created fails the test.
func (c *ControlPlane) Create(t testing.TB, path string, obj any) map[string]any {
	t.Helper()
	code, body, err := c.Do(http.MethodPost, path, c.adminToken, obj)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("kubetest: POST %s: %d %v\n%s", path, code, err, body)
	}
	var stored map[string]any
	if err := json.Unmarshal(body, &stored); err != nil {
		t.Fatalf("kubetest: POST %s: %v\n%s", path, err, body)
	}
	return stored
}

// Get reads path as the admin into out, decoded from JSON; anything but
// 200 OK fails the test.
func (c *ControlPlane) Get(t testing.TB, path string, out any) {
	t.Helper()
	code, body, err := c.Do(http.MethodGet, path, c.adminToken, nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("kubetest: GET %s: %d %v\n%s", path, code, err, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("kubetest: GET %s: %v\n%s", path, err, body)
	}
}
