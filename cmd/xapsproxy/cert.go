package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/push"
)

// certPasswordEnv names the environment variable cert reads a password
// from when -password is not given (a flag shows in the process list).
const certPasswordEnv = "XAPSPROXY_CERT_PASSWORD"

// certCmd shows what an APNs credential file holds, without a
// configuration: xapsproxy cert [-password P] [-key-id K -team-id T -topic X] FILE.
func certCmd(args []string, stdout io.Writer) error {
	now := time.Now()
	fs := newFlags("cert")
	password := fs.String("password", "", "password of a .p12 file or an encrypted PEM key (else $"+certPasswordEnv+")")
	keyID := fs.String("key-id", "", ".p8 token key: its key id")
	teamID := fs.String("team-id", "", ".p8 token key: the team id")
	topic := fs.String("topic", "", ".p8 token key: the topic pushes go to")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// FILE may come before the flags too.
	file := fs.Arg(0)
	if file == "" {
		return fmt.Errorf("cert: name the credential file: %w", errUsage)
	}
	if err := parseFlags(fs, fs.Args()[1:]); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("cert: one file only: %w", errUsage)
	}
	if *password == "" {
		*password = os.Getenv(certPasswordEnv)
	}

	creds, err := push.Inspect(file, config.APNS{CertificatePassword: *password, KeyID: *keyID, TeamID: *teamID, Topic: *topic})
	switch {
	case errors.Is(err, push.ErrWrongPassword) && *password == "":
		return fmt.Errorf("%s: %w (none given) — pass -password or set %s", file, push.ErrWrongPassword, certPasswordEnv)
	case errors.Is(err, push.ErrWrongPassword):
		return fmt.Errorf("%s: %w for this file — check -password or %s", file, push.ErrWrongPassword, certPasswordEnv)
	case err != nil:
		return err
	}
	line := func(label, format string, a ...any) {
		fmt.Fprintf(stdout, "%-12s %s\n", label+":", fmt.Sprintf(format, a...))
	}
	line("file", "%s", file)
	if creds.Token != nil {
		line("kind", "token key (.p8)")
		line("key", "%s", creds.KeyType)
		line("key id", "%s", orNotGiven(creds.KeyID, "-key-id"))
		line("team id", "%s", orNotGiven(creds.TeamID, "-team-id"))
		line("topic", "%s", orNotGiven(creds.Topic, "-topic; a token key carries no topic"))
		return nil
	}
	switch {
	case creds.Format == "PKCS#12":
		line("kind", ".p12, %s", creds.Encryption)
	case creds.Certificate.PrivateKey == nil:
		line("kind", "certificate PEM, certificate only (no private key in the file)")
	default:
		line("kind", "certificate PEM, certificate and private key")
	}
	switch {
	case creds.Topic != "":
		line("topic", "%s (subject UID)", creds.Topic)
	default:
		line("topic", "none: the subject has no UID")
	}
	if creds.HasTopics {
		if len(creds.Topics) == 0 {
			line("topics", "topics extension present, no topic readable in it")
		} else {
			line("topics", "%s (topics extension)", strings.Join(creds.Topics, ", "))
		}
	}
	line("subject", "%s", creds.Subject)
	line("issuer", "%s", creds.Issuer)
	line("not before", "%s", creds.NotBefore.UTC().Format(time.RFC3339))
	left := creds.NotAfter.Sub(now)
	days := int(left.Hours() / 24)
	switch {
	case left <= 0:
		line("not after", "%s (expired %d days ago)", creds.NotAfter.UTC().Format(time.RFC3339), -days)
		fmt.Fprintln(stdout, "WARNING: the certificate has expired; renew it with Apple")
	default:
		line("not after", "%s (%d days left)", creds.NotAfter.UTC().Format(time.RFC3339), days)
		if left < expiryWarning {
			fmt.Fprintf(stdout, "WARNING: the certificate expires in %d days; renew it with Apple before then\n", days)
		}
	}
	if now.Before(creds.NotBefore) {
		fmt.Fprintln(stdout, "WARNING: the certificate is not valid yet; check this machine's clock")
	}
	return nil
}

func orNotGiven(s, hint string) string {
	if s == "" {
		return "not given (" + hint + ")"
	}
	return s
}
