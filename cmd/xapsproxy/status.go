package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/xapsproxy/xapsproxy/admin"
	"github.com/xapsproxy/xapsproxy/config"
)

// statusTimeout bounds the request to the running serve.
const statusTimeout = 15 * time.Second

// errNotServing: nothing answers at admin.listen.
var errNotServing = errors.New("serve is not running")

// statusCmd shows why a user's phone does or does not get push: what the
// running serve knows (asked over the admin listener), or else what the
// store alone knows.
func statusCmd(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := newConfigCommand("status")
	user := cmd.fs.String("user", "", "user whose push status to show (the name the phone logs in with)")
	if err := cmd.parse(args); err != nil {
		return err
	}
	if *user == "" {
		return fmt.Errorf("status: -user is required: %w", errUsage)
	}
	cfg, err := loadConfig(*cmd.path)
	if err != nil {
		return err
	}
	rep, err := askServe(ctx, cfg.Admin, *user)
	if errors.Is(err, errNotServing) {
		where := "admin.listen is off"
		if cfg.Admin.Listen != "" {
			where = "serve is not running at admin.listen (" + cfg.Admin.Listen + ")"
		}
		fmt.Fprintf(stdout, "note: live watcher state and recent pushes are unavailable: %s; showing what the store knows\n\n", where)
		rep, err = storeReport(ctx, cfg, *user)
	}
	if err != nil {
		return err
	}
	if err := admin.WriteText(stdout, rep); err != nil {
		return err
	}
	if len(rep.Registrations) == 0 {
		return fmt.Errorf("user %q has no registered device", rep.User)
	}
	return nil
}

// storeReport is the report from the store alone.
func storeReport(ctx context.Context, cfg *config.Config, user string) (admin.Report, error) {
	st, err := openStore(ctx, cfg)
	if err != nil {
		return admin.Report{}, err
	}
	defer st.Close()
	return admin.Collect(ctx, st, nil, nil, cfg.Backend.CanonicalUser(user), cfg.APNS.Topic, time.Now())
}

// askServe gets the report on user from the serve listening at a.Listen;
// errNotServing when none does.
func askServe(ctx context.Context, a config.Admin, user string) (admin.Report, error) {
	var rep admin.Report
	if a.Listen == "" {
		return rep, errNotServing
	}
	u := url.URL{Scheme: "http", Host: dialAddr(a.Listen), Path: "/status.json", RawQuery: url.Values{"user": {user}}.Encode()}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return rep, err
	}
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return rep, errNotServing
		}
		return rep, fmt.Errorf("ask serve at admin.listen %s: %w", a.Listen, err)
	}
	defer res.Body.Close()
	switch {
	case res.StatusCode == http.StatusUnauthorized:
		return rep, fmt.Errorf("admin.token: serve at %s refused it — set the token serve runs with (admin.token or token_file)", a.Listen)
	case res.StatusCode != http.StatusOK:
		body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return rep, fmt.Errorf("ask serve at admin.listen %s: %s: %s", a.Listen, res.Status, body)
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 16<<20)).Decode(&rep); err != nil {
		return rep, fmt.Errorf("ask serve at admin.listen %s: %w (is it xapsproxy's admin listener?)", a.Listen, err)
	}
	return rep, nil
}

// dialAddr is where to reach a listener bound to addr: on this machine,
// loopback for the unspecified address.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}
