package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/push"
)

// browserTimeout bounds the whole browser session: starting chromium takes
// a few seconds on a busy machine.
const browserTimeout = 2 * time.Minute

// startBrowser starts Debian's chromium, headless, for the test; it skips
// when chromium is not installed unless XAPSPROXY_TEST_SERVERS=required.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("XAPSPROXY_TEST_SERVERS") == "required" {
			t.Fatal("chromium is not installed and XAPSPROXY_TEST_SERVERS=required")
		}
		t.Skip("chromium is not installed")
	}
	// Without these flags chromium waits for the network (updates, sync,
	// QUIC probes), which this test does not have; the sandbox does not
	// run as root.
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	}
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	t.Cleanup(cancel)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	return bctx
}

// The status page in a real browser: the admin token's cookie flow, the
// device registered through the proxy, and "Send a test push", which
// reaches the fake APNs for that device with the right body and shows
// Apple's 200.
func TestStatusPageInBrowser(t *testing.T) {
	t.Parallel()
	ctx := startBrowser(t)
	s := newStackWith(t, dovecottest.Options{}, "token = \""+statusToken+"\"\n")
	s.secrets = append(s.secrets, statusToken)
	s.start()
	s.connect().loginAndRegister(v2Line, "2")
	s.waitWatching()
	base := "http://" + s.app.adminLn.Addr().String()

	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/status?user=alice&token="+statusToken),
		chromedp.WaitVisible(chromedp.CSS("#registrations")),
	); err != nil {
		t.Fatalf("loading the status page: %v", err)
	}
	location := run1(t, ctx, chromedp.Location())
	device := run1(t, ctx, chromedp.Text(chromedp.CSS("code.token")))
	watcher := run1(t, ctx, chromedp.Text(chromedp.CSS("#watch")))
	if location != base+"/status?user=alice" {
		t.Errorf("address after the token redirect = %q, want it without the token", location)
	}
	if device != v2Token[:8] {
		t.Errorf("device shown = %q, want %q", device, v2Token[:8])
	}
	if !strings.Contains(watcher, "mailboxes watched") {
		t.Errorf("watcher table = %q", watcher)
	}
	if n := len(s.apns.Requests()); n != 0 {
		t.Fatalf("%d pushes before the button was pressed", n)
	}

	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#test-push")),
		chromedp.WaitVisible(chromedp.CSS("#test-results")),
	); err != nil {
		t.Fatalf("sending the test push: %v", err)
	}
	results := run1(t, ctx, chromedp.Text(chromedp.CSS("#test-results")))
	reqs := s.apns.WaitRequests(t, 1, waitTimeout)
	r := reqs[0]
	if r.Token != v2Token || r.AccountID != v2Account || r.Topic != topic ||
		string(r.Body) != string(push.Payload(v2Account, []string{"INBOX"})) {
		t.Errorf("test push: token %s account %s topic %s body %s", r.Token, r.AccountID, r.Topic, r.Body)
	}
	if !strings.Contains(results, "200 (delivered)") || !strings.Contains(results, r.APNsID) || !strings.Contains(results, v2Token[:8]) {
		t.Errorf("test push results on the page = %q, want 200 with apns-id %s", results, r.APNsID)
	}
}

// run1 runs one browser action that returns a value.
func run1[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
