package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/xapsproxy/xapsproxy/admin"
	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/xapsd"
	"github.com/xapsproxy/xapsproxy/proxy"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

// maxUserLen bounds an imported user name, as IMAP servers bound logins.
const maxUserLen = 256

// importXapsdCmd takes over the registrations of dovecot-xaps-daemon: each
// account in its database becomes a registration of ours, as if the device
// had registered through the proxy at the time the daemon recorded.
func importXapsdCmd(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := newConfigCommand("import-xapsd")
	dryRun := cmd.fs.Bool("dry-run", false, "report what would be imported, write nothing")
	cfg, err := cmd.load(args)
	if err != nil {
		return err
	}
	if cmd.fs.NArg() != 1 {
		return fmt.Errorf("import-xapsd: name the daemon's database file (databaseFile in xapsd.yaml, e.g. /var/lib/xapsd/database.json): %w", errUsage)
	}
	dbPath := cmd.fs.Arg(0)
	db, err := readXapsd(dbPath)
	if err != nil {
		return err
	}
	topic, err := importTopic(cfg)
	if err != nil {
		return err
	}

	if !*dryRun {
		// serve learns of registrations only as devices make them: it
		// would not watch imported accounts until restarted. Holding the
		// lock also keeps a serve from starting halfway through. A
		// PostgreSQL store has no lock to tell (lockStore takes none).
		lock, err := lockStore(cfg)
		var locked *store.LockedError
		if errors.As(err, &locked) {
			return fmt.Errorf("store.path %s: %w — stop xapsproxy serve first, then import, then start it", cfg.Store.Path, locked)
		}
		if err != nil {
			return err
		}
		if lock != nil {
			defer lock.Close()
		}
	}
	var existing []store.Registration
	var st store.Store
	// A dry run creates no SQLite file; a PostgreSQL database exists.
	if _, serr := os.Stat(cfg.Store.Path); !*dryRun || serr == nil || cfg.Store.IsPostgres() {
		if st, err = openStore(ctx, cfg); err != nil {
			return err
		}
		defer st.Close()
		if existing, err = st.All(ctx); err != nil {
			return err
		}
	}

	plan := planImport(db.Records, existing, cfg, topic, time.Now())
	if !*dryRun {
		if err := plan.write(ctx, st); err != nil {
			return err
		}
	}
	plan.report(stdout, dbPath, *dryRun, db.AppleCerts)
	if cfg.Store.IsPostgres() && !*dryRun {
		fmt.Fprintln(stdout, "note: "+cfg.Store.Key()+": import-xapsd cannot tell whether a serve uses this database; "+
			"one that was running watches the imported accounts only once restarted")
	}
	return nil
}

// readXapsd reads the daemon's database; an error here is the command's
// failure, with the file named.
func readXapsd(path string) (*xapsd.Database, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("import-xapsd: %s: %w — name the daemon's databaseFile (xapsd.yaml; default /var/lib/xapsd/database.json), and run as a user who may read it", path, err)
	}
	defer f.Close()
	db, err := xapsd.Read(f)
	if err != nil {
		return nil, fmt.Errorf("import-xapsd: %s: %w", path, err)
	}
	return db, nil
}

// importTopic is the topic the registrations are stored with: the one
// serve answers devices with, from apns.topic or the credential.
func importTopic(cfg *config.Config) (string, error) {
	if cfg.APNS.Topic != "" {
		return cfg.APNS.Topic, nil
	}
	creds, err := push.LoadCredentials(cfg.APNS, time.Now())
	if err != nil {
		return "", err
	}
	return creds.Topic, nil
}

// importPlan is what an import does with each record of the database.
type importPlan struct {
	regs    []store.Registration // to store
	newer   []string             // ours (or another record of the device) is newer
	limit   []string             // beyond MaxRegistrationsPerUser
	invalid []string             // with the reason
}

// planImport decides, record by record, in the database's order: a
// record must pass the rules of a live registration; of two records for
// one (user, token), and of a record and our own registration, the newer
// wins (a record without a time never replaces ours); a new device beyond
// a user's MaxRegistrationsPerUser is left out.
func planImport(recs []xapsd.Record, existing []store.Registration, cfg *config.Config, topic string, now time.Time) *importPlan {
	type key struct{ user, token string }
	ours := map[key]time.Time{}
	devices := map[string]int{} // per user, ours and planned
	for _, r := range existing {
		ours[key{r.User, r.DeviceToken}] = r.Renewed
		devices[r.User]++
	}
	p := &importPlan{}
	planned := map[key]int{} // index in p.regs
	for _, rec := range recs {
		reg, err := importRecord(rec, cfg, topic, now)
		if err != nil {
			p.invalid = append(p.invalid, fmt.Sprintf("%s: %v", describeRecord(rec), err))
			continue
		}
		k := key{reg.User, reg.DeviceToken}
		if i, ok := planned[k]; ok {
			other := &p.regs[i]
			if !reg.Renewed.After(other.Renewed) {
				p.newer = append(p.newer, describeReg(reg, "another account id of this device in the file is newer"))
				continue
			}
			p.newer = append(p.newer, describeReg(*other, "another account id of this device in the file is newer"))
			*other = reg
			continue
		}
		if renewed, ok := ours[k]; ok {
			if rec.Time.IsZero() || !rec.Time.After(renewed) {
				p.newer = append(p.newer, describeReg(reg, "registered with xapsproxy "+renewed.UTC().Format(time.RFC3339)))
				continue
			}
		} else {
			if devices[reg.User] >= store.MaxRegistrationsPerUser {
				p.limit = append(p.limit, describeReg(reg, fmt.Sprintf("the user has %d devices already", store.MaxRegistrationsPerUser)))
				continue
			}
			devices[reg.User]++
		}
		planned[k] = len(p.regs)
		p.regs = append(p.regs, reg)
	}
	return p
}

// importRecord turns one record into the registration a live
// XAPPLEPUSHSERVICE would have made.
func importRecord(rec xapsd.Record, cfg *config.Config, topic string, now time.Time) (store.Registration, error) {
	if rec.Err != nil {
		return store.Registration{}, rec.Err
	}
	user := cfg.Backend.CanonicalUser(rec.User)
	switch {
	case user == "":
		return store.Registration{}, errors.New("no user name")
	case len(user) > maxUserLen || !utf8.ValidString(user) || strings.ContainsFunc(user, isControl):
		return store.Registration{}, errors.New("not a valid user name")
	// Refused whatever proxy.allow_master_logins says: a live master login
	// registers under the name before the separator, never the whole.
	case cfg.Watch.MasterSeparator != "" && strings.Contains(user, cfg.Watch.MasterSeparator):
		// As at a live login: a name with the separator is a master login.
		return store.Registration{}, fmt.Errorf("user name has watch.master_separator %q in it", cfg.Watch.MasterSeparator)
	}
	// The daemon stored the mailboxes of version 2 registrations (the only
	// version its plugin accepted); none would be a version 1 one: INBOX.
	version := 2
	if len(rec.Mailboxes) == 0 {
		version = 1
	}
	reg, err := proxy.CheckRegistration(version, rec.AccountID, rec.DeviceToken, "", rec.Mailboxes)
	if err != nil {
		return store.Registration{}, err
	}
	reg.User, reg.Topic = user, topic
	reg.Registered, reg.Renewed = now, now
	if !rec.Time.IsZero() {
		reg.Registered, reg.Renewed = rec.Time, rec.Time
	}
	return reg, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// describeRecord names a record in the report: user, account id and the
// token shortened, as logs show tokens.
func describeRecord(rec xapsd.Record) string {
	token := store.ShortToken(strings.ToLower(rec.DeviceToken))
	if strings.Trim(token, "0123456789abcdefghijklmnopqrstuvwxyz") != "" {
		token = strconv.Quote(token)
	}
	return fmt.Sprintf("user %q account %q token %s", clip(rec.User), clip(rec.AccountID), token)
}

func describeReg(r store.Registration, why string) string {
	return fmt.Sprintf("user %q account %q token %s: %s", r.User, r.AccountID, store.ShortToken(r.DeviceToken), why)
}

// clip keeps a hostile name from flooding the report.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// write stores the planned registrations; the first failure stops it.
func (p *importPlan) write(ctx context.Context, st store.Store) error {
	for i, r := range p.regs {
		if err := st.Register(ctx, r); err != nil {
			return fmt.Errorf("import-xapsd: storing registration %d of %d (user %q token %s): %w; the ones before are stored, and importing again is safe",
				i+1, len(p.regs), r.User, store.ShortToken(r.DeviceToken), err)
		}
	}
	return nil
}

func (p *importPlan) report(w io.Writer, path string, dryRun, appleCerts bool) {
	verb := "imported"
	if dryRun {
		verb = "would import (dry run, nothing written)"
	}
	for _, r := range p.regs {
		fmt.Fprintf(w, "%s: user %q account %q token %s, %s, version %d, registered %s\n", verb, r.User, r.AccountID,
			store.ShortToken(r.DeviceToken), admin.Printable(strings.Join(r.Mailboxes, ",")), r.Version, r.Renewed.UTC().Format(time.RFC3339))
	}
	for _, l := range p.newer {
		fmt.Fprintln(w, "kept the newer:", l)
	}
	for _, l := range p.limit {
		fmt.Fprintln(w, "skipped, device limit:", l)
	}
	for _, l := range p.invalid {
		fmt.Fprintln(w, "invalid:", l)
	}
	if appleCerts {
		fmt.Fprintln(w, "note: the file also holds certificates the daemon obtained from Apple (AppleCerts); they are not imported: configure [apns] with your Mail push certificate")
	}
	done := "imported"
	if dryRun {
		done = "to import"
	}
	fmt.Fprintf(w, "%s: %d %s, %d already newer, %d beyond the device limit, %d invalid\n",
		path, len(p.regs), done, len(p.newer), len(p.limit), len(p.invalid))
}
