// Command xapsproxy is an IMAP proxy that gives iPhone and iPad Mail push
// for any IMAP server. See README.md for how to run it.
//
//	xapsproxy serve -config FILE          run the proxy
//	xapsproxy check -config FILE [-user U] [-dovecot-config FILE]   preflight: everything serve needs, APNs, the backend, Dovecot's limits
//	xapsproxy demo                        everything in one process, on an embedded default
//	xapsproxy registrations -config FILE [list | delete USER TOKEN | delete-token TOKEN]
//	xapsproxy push -config FILE -user U   send a test push to U's devices
//	xapsproxy status -config FILE -user U   why U's phone does or does not get push
//	xapsproxy backup -config FILE OUT     a consistent copy of the store, while serve runs
//	xapsproxy mobileconfig -user U -host HOST   a profile that sets up U's Mail account
//	xapsproxy cert [-password P] FILE     inspect an APNs certificate or .p8 key
//	xapsproxy import-xapsd -config FILE DB   take over dovecot-xaps-daemon's registrations
//	xapsproxy version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/xapsproxy/xapsproxy/config"
)

const usage = `usage: xapsproxy <command> [flags]

commands:
  serve -config FILE                 run the proxy
  check -config FILE [-user U] [-dovecot-config FILE]
                                     preflight: what serve needs, APNs, the backend and its master login, Dovecot's limits
  demo [-keep]                       run everything in one process on an embedded default
  registrations -config FILE [list | delete USER TOKEN | delete-token TOKEN]
  push -config FILE -user USER       send a test push to USER's devices
  status -config FILE -user USER     why USER's phone does or does not get push (asks the running serve)
  backup -config FILE OUT            copy the store to OUT (a new file), also while serve runs
  mobileconfig -user U -host HOST    write a profile (-o FILE) that sets up U's Mail account on an iPhone
  cert [-password P] FILE            show an APNs certificate (PEM, .p12) or .p8 key: topic, subject, expiry
  import-xapsd -config FILE [-dry-run] DB   take over dovecot-xaps-daemon's registrations (its database.json)
  version                            print the version
`

// errUsage makes main print the usage and exit 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitStatus(err, os.Stdout, os.Stderr))
}

// oneLine keeps a failure to one line on stderr, as logs and init systems
// show it, even if some cause spans several.
func oneLine(msg string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(msg)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		return serveCmd(ctx, args, stderr)
	case "check":
		return checkCmd(ctx, args, stdout)
	case "demo":
		return demoCmd(ctx, args, stdout, stderr)
	case "registrations":
		return registrationsCmd(ctx, args, stdout)
	case "push":
		return pushCmd(ctx, args, stdout, stderr)
	case "backup":
		return backupCmd(ctx, args, stdout)
	case "status":
		return statusCmd(ctx, args, stdout)
	case "mobileconfig":
		return mobileconfigCmd(ctx, args, stdout)
	case "cert":
		return certCmd(args, stdout)
	case "import-xapsd":
		return importXapsdCmd(ctx, args, stdout)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "xapsproxy", version())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q: %w", cmd, errUsage)
}

// newFlags makes a flag set that reports errors instead of exiting or
// printing: parseFlags turns -h into a helpRequest and a bad flag into a
// usage error.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return &helpRequest{fs}
	} else if err != nil {
		return fmt.Errorf("%s: %w (xapsproxy %s -h lists the flags): %w", fs.Name(), err, fs.Name(), errUsage)
	}
	return nil
}

// configCommand is a subcommand that takes -config FILE.
type configCommand struct {
	fs   *flag.FlagSet
	path *string
}

func newConfigCommand(name string) configCommand {
	fs := newFlags(name)
	return configCommand{fs: fs, path: fs.String("config", "", "configuration file (TOML)")}
}

// parse parses args; -config is required.
func (c configCommand) parse(args []string) error {
	if err := parseFlags(c.fs, args); err != nil {
		return err
	}
	if *c.path == "" {
		return fmt.Errorf("%s: -config FILE is required: %w", c.fs.Name(), errUsage)
	}
	return nil
}

// load parses args and loads the -config file.
func (c configCommand) load(args []string) (*config.Config, error) {
	if err := c.parse(args); err != nil {
		return nil, err
	}
	return loadConfig(*c.path)
}

// loadConfig loads the configuration file at path.
func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == path {
		return nil, configFileError(path, err)
	}
	return cfg, err
}

// newLogger logs text lines to w; debug adds debug lines.
func newLogger(w io.Writer, debug bool) *slog.Logger {
	return newConfigLogger(w, config.Log{Format: config.LogFormatText, Level: config.LogLevelInfo}, debug)
}

// buildVersion, when set at link time, is what version reports: builds
// without the repository's history (the Dockerfile's, whose context has no
// .git) set it with -ldflags "-X main.buildVersion=$(git describe)".
var buildVersion string

// version is buildVersion, or else the module version and VCS revision Go
// recorded in the binary.
func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}
