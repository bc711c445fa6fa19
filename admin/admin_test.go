package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/store"
)

func TestEndpoints(t *testing.T) {
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(st))
	defer srv.Close()
	get := func(path string) (int, string) {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics = %d, %d bytes", code, len(body))
	}
	st.Close()
	if code, body := get("/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "store") {
		t.Errorf("/healthz with the store closed = %d %q", code, body)
	}
}
