package push

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sideshow/apns2/certificate"
	"github.com/sideshow/apns2/token"
	"golang.org/x/crypto/pkcs12"

	"github.com/xapsproxy/xapsproxy/config"
)

// Object identifiers found in APNs provider certificates.
var (
	// oidUserID is the subject UID attribute, which holds the certificate's
	// topic (for Mail: com.apple.mail.XServer.<uuid>).
	oidUserID = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}
	// oidTopics is the extension of newer certificates that lists the
	// topics the certificate may push to.
	oidTopics = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 6}
)

// certTimeFormat is how errors show a certificate's validity dates.
const certTimeFormat = "2006-01-02 15:04 UTC"

// asn1Sequence is the first byte of a DER file such as a .p12.
const asn1Sequence = 0x30

// Credentials are what the proxy authenticates to APNs with: a client
// certificate or a provider token key, plus the topic pushes go to.
type Credentials struct {
	Certificate *tls.Certificate // client certificate and key; nil with token auth
	Token       *token.Token     // provider token signer; nil with certificate auth
	Topic       string           // default apns-topic: config topic, else the certificate's UID
	Subject     string           // certificate subject; "" with token auth
	NotBefore   time.Time        // certificate validity; zero with token auth
	NotAfter    time.Time
	Topics      []string       // topics listed in the certificate's topics extension, if any
	HasTopics   bool           // the certificate carries the topics extension
	RootCAs     *x509.CertPool // system roots plus apns.ca_file; nil = system roots only
	File        string         // the file the certificate or key came from
	Format      string         // "PEM", "PKCS#12" or "p8 token key"
	KeyID       string         // token auth: key id
	TeamID      string         // token auth: team id
}

// LoadCredentials reads the APNs credentials named by cfg: a PEM certificate
// (with its key in the same file or in key_file), a .p12 file with
// certificate_password, or a .p8 token key with key_id and team_id. It also
// reads ca_file, if set, so that NewAPNs does no I/O. A certificate that has
// expired or is not yet valid at now is an error. Errors name the file.
func LoadCredentials(cfg config.APNS, now time.Time) (*Credentials, error) {
	var creds *Credentials
	var err error
	switch {
	case cfg.TokenKeyFile != "":
		creds, err = loadToken(cfg)
	case cfg.CertificateFile != "":
		creds, err = loadCertificate(cfg, now)
	default:
		return nil, errors.New("apns.certificate_file: not set — set it, or token_key_file with key_id, team_id and topic")
	}
	if err != nil {
		return nil, err
	}
	if cfg.CAFile != "" {
		if creds.RootCAs, err = loadRoots(cfg.CAFile); err != nil {
			return nil, err
		}
	}
	return creds, nil
}

func loadToken(cfg config.APNS) (*Credentials, error) {
	where := "apns.token_key_file " + cfg.TokenKeyFile
	switch {
	case cfg.KeyID == "":
		return nil, fmt.Errorf("%s: key_id is required with a token key", where)
	case cfg.TeamID == "":
		return nil, fmt.Errorf("%s: team_id is required with a token key", where)
	case cfg.Topic == "":
		return nil, fmt.Errorf("%s: topic is required with a token key (a token key carries no topic)", where)
	}
	data, err := config.ReadFile("apns.token_key_file", cfg.TokenKeyFile)
	if err != nil {
		return nil, err
	}
	key, err := token.AuthKeyFromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%s: not an APNs .p8 key (%w) — name the PKCS#8 PEM file holding the ECDSA key Apple issued", where, err)
	}
	tok := &token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID}
	if _, err := tok.Generate(); err != nil {
		return nil, fmt.Errorf("%s: sign a provider token: %w", where, err)
	}
	return &Credentials{
		Token:  tok,
		Topic:  cfg.Topic,
		File:   cfg.TokenKeyFile,
		Format: "p8 token key",
		KeyID:  cfg.KeyID,
		TeamID: cfg.TeamID,
	}, nil
}

func loadCertificate(cfg config.APNS, now time.Time) (*Credentials, error) {
	where := "apns.certificate_file " + cfg.CertificateFile
	data, err := config.ReadFile("apns.certificate_file", cfg.CertificateFile)
	if err != nil {
		return nil, err
	}
	var cert tls.Certificate
	format := "PEM"
	if isPEM(data) {
		if cfg.KeyFile != "" {
			keyData, err := config.ReadFile("apns.key_file", cfg.KeyFile)
			if err != nil {
				return nil, err
			}
			data = append(append(append([]byte(nil), data...), '\n'), keyData...)
		}
		cert, err = certificate.FromPemBytes(data, cfg.CertificatePassword)
		if err != nil {
			return nil, pemError(where, cfg, err)
		}
	} else {
		format = "PKCS#12"
		if len(data) == 0 || data[0] != asn1Sequence {
			return nil, fmt.Errorf("%s: neither PEM nor PKCS#12 — name the APNs certificate as Apple issued it, PEM or .p12", where)
		}
		if cfg.KeyFile != "" {
			return nil, fmt.Errorf("%s: is a .p12 file, which holds its own key — remove apns.key_file", where)
		}
		if cert, err = loadP12(where, data, cfg.CertificatePassword); err != nil {
			return nil, err
		}
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s: parse certificate: %w — name the certificate as Apple issued it", where, err)
		}
		cert.Leaf = leaf
	}
	if !keyMatches(leaf, cert.PrivateKey) {
		return nil, fmt.Errorf("%s: the private key does not belong to the certificate — use the key the certificate was issued for", where)
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("%s: certificate expired on %s — renew it with Apple and replace the file; xapsproxy check shows the expiry date it finds",
			where, leaf.NotAfter.UTC().Format(certTimeFormat))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("%s: certificate is not valid before %s — check this machine's clock",
			where, leaf.NotBefore.UTC().Format(certTimeFormat))
	}
	creds := &Credentials{
		Certificate: &cert,
		Subject:     leaf.Subject.String(),
		NotBefore:   leaf.NotBefore,
		NotAfter:    leaf.NotAfter,
		File:        cfg.CertificateFile,
		Format:      format,
	}
	creds.Topics, creds.HasTopics = certTopics(leaf)
	creds.Topic = cfg.Topic
	if creds.Topic == "" {
		creds.Topic = certUID(leaf)
	}
	if creds.Topic == "" {
		return nil, fmt.Errorf("%s: certificate %q has no UID in its subject to use as topic — set apns.topic", where, creds.Subject)
	}
	return creds, nil
}

func isPEM(data []byte) bool {
	return strings.Contains(string(data), "-----BEGIN ")
}

func pemError(where string, cfg config.APNS, err error) error {
	switch {
	case errors.Is(err, certificate.ErrNoCertificate):
		return fmt.Errorf("%s: no CERTIFICATE block found (%w) — name the APNs certificate, PEM or .p12", where, err)
	case errors.Is(err, certificate.ErrNoPrivateKey) && cfg.KeyFile == "":
		return fmt.Errorf("%s: no private key found (%w) — put it in the same file or set apns.key_file", where, err)
	case errors.Is(err, certificate.ErrNoPrivateKey):
		return fmt.Errorf("%s: no private key found in apns.key_file %s (%w) — name the certificate's PEM key there", where, cfg.KeyFile, err)
	case errors.Is(err, certificate.ErrFailedToDecryptKey):
		return fmt.Errorf("%s: cannot decrypt the private key (%w) — wrong certificate_password: set apns.certificate_password to the key's password", where, err)
	case errors.Is(err, certificate.ErrFailedToParsePrivateKey):
		return fmt.Errorf("%s: cannot parse the private key (%w) — encrypted PKCS#8 keys are not supported: "+
			"decrypt it with `openssl pkey -in key.pem -out plain.pem`", where, err)
	}
	return fmt.Errorf("%s: %w — name the APNs certificate as Apple issued it, PEM or .p12", where, err)
}

// loadP12 decodes a PKCS#12 file with apns2, translating the errors an
// operator can act on, and falls back to a full decode for files that also
// hold CA certificates.
func loadP12(where string, data []byte, password string) (tls.Certificate, error) {
	cert, err := certificate.FromP12Bytes(data, password)
	if err == nil {
		return cert, nil
	}
	var notImpl pkcs12.NotImplementedError
	switch {
	case errors.Is(err, pkcs12.ErrIncorrectPassword):
		return cert, fmt.Errorf("%s: wrong certificate_password for this .p12 file (%w) — set apns.certificate_password to the password it was exported with", where, err)
	case errors.As(err, &notImpl), errors.Is(err, pkcs12.ErrDecryption):
		return cert, fmt.Errorf("%s: cannot read this .p12 file (%w) — it probably uses the AES encryption "+
			"that OpenSSL 3 writes by default: re-export it with `openssl pkcs12 -export -legacy ...`, or convert it "+
			"to PEM with `openssl pkcs12 -in cert.p12 -nodes -out cert.pem` and point certificate_file at the PEM file",
			where, err)
	case strings.Contains(err.Error(), "expected exactly two safe bags"):
		return p12Chain(where, data, password)
	}
	return cert, fmt.Errorf("%s: not a readable PEM or PKCS#12 file (%w) — name the APNs certificate as Apple issued it, PEM or .p12", where, err)
}

// p12Chain reads a PKCS#12 file holding a key, its certificate and CA
// certificates: the leaf is the certificate that matches the key.
func p12Chain(where string, data []byte, password string) (tls.Certificate, error) {
	blocks, err := pkcs12.ToPEM(data, password)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: decode PKCS#12: %w", where, err)
	}
	var key crypto.PrivateKey
	var certs []*x509.Certificate
	for _, b := range blocks {
		switch b.Type {
		case "PRIVATE KEY":
			if key, err = parseKey(b); err != nil {
				return tls.Certificate{}, fmt.Errorf("%s: parse private key: %w", where, err)
			}
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return tls.Certificate{}, fmt.Errorf("%s: parse certificate: %w", where, err)
			}
			certs = append(certs, c)
		}
	}
	if key == nil {
		return tls.Certificate{}, fmt.Errorf("%s: the .p12 file holds no private key", where)
	}
	out := tls.Certificate{PrivateKey: key}
	for _, c := range certs {
		if keyMatches(c, key) {
			out.Leaf = c
			out.Certificate = append([][]byte{c.Raw}, out.Certificate...)
		} else {
			out.Certificate = append(out.Certificate, c.Raw)
		}
	}
	if out.Leaf == nil {
		return tls.Certificate{}, fmt.Errorf("%s: no certificate in the .p12 file matches its private key", where)
	}
	return out, nil
}

func parseKey(b *pem.Block) (crypto.PrivateKey, error) {
	if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	return x509.ParseECPrivateKey(b.Bytes)
}

// keyMatches reports whether key is the private half of cert's public key.
func keyMatches(cert *x509.Certificate, key crypto.PrivateKey) bool {
	signer, ok := key.(crypto.Signer)
	if !ok {
		return false
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// certUID returns the subject UID attribute, or "".
func certUID(cert *x509.Certificate) string {
	for _, n := range cert.Subject.Names {
		if n.Type.Equal(oidUserID) {
			if s, ok := n.Value.(string); ok {
				return s
			}
		}
	}
	return ""
}

// certTopics returns the topics listed in Apple's topics extension (a
// sequence of topic strings, each followed by a sequence of push types) and
// whether the extension is present. Parsing is best effort.
func certTopics(cert *x509.Certificate) ([]string, bool) {
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidTopics) {
			continue
		}
		var elems []asn1.RawValue
		if _, err := asn1.Unmarshal(ext.Value, &elems); err != nil {
			return nil, true
		}
		var topics []string
		for _, e := range elems {
			if e.Class == asn1.ClassUniversal && e.Tag == asn1.TagUTF8String {
				topics = append(topics, string(e.Bytes))
			}
		}
		return topics, true
	}
	return nil, false
}

func loadRoots(path string) (*x509.CertPool, error) {
	return config.CertPool("apns.ca_file", path)
}

// Describe is a one-line summary for humans: kind, file, topic, subject and
// expiry. It never includes key material.
func (c *Credentials) Describe() string {
	var b strings.Builder
	if c.Token != nil {
		fmt.Fprintf(&b, "APNs token key (%s %s): key id %s, team id %s, topic %s",
			c.Format, c.File, c.KeyID, c.TeamID, c.Topic)
	} else {
		fmt.Fprintf(&b, "APNs certificate (%s %s): topic %s, subject %q, expires %s",
			c.Format, c.File, c.Topic, c.Subject, c.NotAfter.UTC().Format(time.RFC3339))
		if c.HasTopics {
			fmt.Fprintf(&b, ", lists %d topics", len(c.Topics))
			if len(c.Topics) > 0 {
				fmt.Fprintf(&b, " (%s)", strings.Join(c.Topics, ", "))
			}
		}
	}
	if c.RootCAs != nil {
		b.WriteString(", extra roots from ca_file")
	}
	return b.String()
}
