package cyrusrun

import (
	"os"
	"testing"
)

// StartTest starts an instance that is stopped and removed when the test
// ends. When Cyrus is not installed it skips the test, or fails it when
// XAPSPROXY_TEST_SERVERS=required (as CI sets). Set XAPSPROXY_KEEP_CYRUS=1
// to keep the directory of a failed test for inspection.
func StartTest(t testing.TB, opts Options) *Instance {
	t.Helper()
	if !Available() {
		if os.Getenv("XAPSPROXY_TEST_SERVERS") == "required" {
			t.Fatal("cyrusrun: " + ErrNotInstalled.Error() + " and XAPSPROXY_TEST_SERVERS=required")
		}
		t.Skip("cyrusrun: " + ErrNotInstalled.Error())
	}
	keep := os.Getenv("XAPSPROXY_KEEP_CYRUS") == "1"
	opts.KeepOnFailure = opts.KeepOnFailure || keep
	c, err := Start(opts)
	if err != nil {
		t.Fatalf("cyrusrun: %v", err)
	}
	t.Cleanup(func() {
		c.Kill()
		if t.Failed() {
			t.Logf("cyrusrun: instance %s; master output:\n%s", c.Dir, c.Output())
			if keep {
				t.Logf("cyrusrun: keeping %s (XAPSPROXY_KEEP_CYRUS=1)", c.Dir)
				return
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("cyrusrun: %v", err)
		}
	})
	return c
}
