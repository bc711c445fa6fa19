package push

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sideshow/apns2/certificate"
	"github.com/sideshow/apns2/token"
	"software.sslmate.com/src/go-pkcs12"

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

// ErrWrongPassword is wrapped by the error for a .p12 file that the
// password given does not open.
var ErrWrongPassword = errors.New("wrong password")

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
	Subject     string           // certificate subject, e.g. UID=com.apple.mail.XServer.<uuid>,CN=...; "" with token auth
	Issuer      string           // certificate issuer, written like Subject
	NotBefore   time.Time        // certificate validity; zero with token auth
	NotAfter    time.Time
	Topics      []string       // topics listed in the certificate's topics extension, if any
	HasTopics   bool           // the certificate carries the topics extension
	RootCAs     *x509.CertPool // system roots plus apns.ca_file; nil = system roots only
	File        string         // the file the certificate or key came from
	Format      string         // "PEM", "PKCS#12" or "p8 token key"
	Encryption  string         // PKCS#12: P12AES or P12Legacy (or P12None)
	KeyType     string         // token auth: e.g. "ES256 (ECDSA P-256)"
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
		creds, err = loadToken(cfg, false)
	case cfg.CertificateFile != "":
		creds, err = loadCertificate(cfg, now, false)
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

// Inspect reads the APNs credential in file to show what it is, without a
// configuration: a PEM certificate (with or without its key), a .p12 file
// opened with opts.CertificatePassword, or a .p8 token key (a PEM file with
// a private key and no certificate), for which opts.KeyID, TeamID and Topic
// are optional. Unlike LoadCredentials it accepts a certificate that has
// expired or is not yet valid, or that has no UID: the caller looks at
// NotBefore, NotAfter and Topic. A key that does not belong to the
// certificate, a wrong password or a file that is no credential are errors.
func Inspect(file string, opts config.APNS) (*Credentials, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read credential file: %w", err)
	}
	cfg := config.APNS{
		CertificatePassword: opts.CertificatePassword,
		KeyID:               opts.KeyID,
		TeamID:              opts.TeamID,
		Topic:               opts.Topic,
	}
	if isPEM(data) && !bytes.Contains(data, []byte("-----BEGIN CERTIFICATE")) && bytes.Contains(data, []byte("PRIVATE KEY-----")) {
		cfg.TokenKeyFile = file
		return loadToken(cfg, true)
	}
	cfg.CertificateFile = file
	return loadCertificate(cfg, time.Time{}, true)
}

// loadToken reads a .p8 token key; inspect leaves key_id, team_id and
// topic optional.
func loadToken(cfg config.APNS, inspect bool) (*Credentials, error) {
	where := "apns.token_key_file " + cfg.TokenKeyFile
	switch {
	case inspect:
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
		Token:   tok,
		Topic:   cfg.Topic,
		File:    cfg.TokenKeyFile,
		Format:  "p8 token key",
		KeyType: keyType(key),
		KeyID:   cfg.KeyID,
		TeamID:  cfg.TeamID,
	}, nil
}

// keyType names a token key's signing algorithm: APNs takes ES256 only.
func keyType(key *ecdsa.PrivateKey) string {
	if key.Curve == elliptic.P256() {
		return "ES256 (ECDSA P-256)"
	}
	return "ECDSA " + key.Curve.Params().Name + ", not the ES256 (P-256) key APNs takes"
}

// loadCertificate reads a PEM or .p12 certificate; inspect accepts one
// outside its validity, without UID, or (PEM) without its key.
func loadCertificate(cfg config.APNS, now time.Time, inspect bool) (*Credentials, error) {
	where := "apns.certificate_file " + cfg.CertificateFile
	data, err := config.ReadFile("apns.certificate_file", cfg.CertificateFile)
	if err != nil {
		return nil, err
	}
	var cert tls.Certificate
	format, encryption := "PEM", ""
	if isPEM(data) {
		if cfg.KeyFile != "" {
			keyData, err := config.ReadFile("apns.key_file", cfg.KeyFile)
			if err != nil {
				return nil, err
			}
			data = append(append(append([]byte(nil), data...), '\n'), keyData...)
		}
		cert, err = certificate.FromPemBytes(data, cfg.CertificatePassword)
		if inspect && errors.Is(err, certificate.ErrNoPrivateKey) {
			cert, err = pemCertOnly(data)
		}
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
		encryption = p12Encryption(data)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s: parse certificate: %w — name the certificate as Apple issued it", where, err)
		}
		cert.Leaf = leaf
	}
	if (cert.PrivateKey != nil || !inspect) && !keyMatches(leaf, cert.PrivateKey) {
		return nil, fmt.Errorf("%s: the private key does not belong to the certificate — use the key the certificate was issued for", where)
	}
	if !inspect && now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("%s: certificate expired on %s — renew it with Apple and replace the file; xapsproxy check shows the expiry date it finds",
			where, leaf.NotAfter.UTC().Format(certTimeFormat))
	}
	if !inspect && now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("%s: certificate is not valid before %s — check this machine's clock",
			where, leaf.NotBefore.UTC().Format(certTimeFormat))
	}
	creds := &Credentials{
		Certificate: &cert,
		Subject:     FormatName(leaf.Subject),
		Issuer:      FormatName(leaf.Issuer),
		NotBefore:   leaf.NotBefore,
		NotAfter:    leaf.NotAfter,
		File:        cfg.CertificateFile,
		Format:      format,
		Encryption:  encryption,
	}
	creds.Topics, creds.HasTopics = certTopics(leaf)
	creds.Topic = cfg.Topic
	if creds.Topic == "" {
		creds.Topic = certUID(leaf)
	}
	if creds.Topic == "" && !inspect {
		return nil, fmt.Errorf("%s: certificate %q has no UID in its subject to use as topic — set apns.topic", where, creds.Subject)
	}
	return creds, nil
}

// pemCertOnly reads the first certificate of a PEM file that holds no key.
func pemCertOnly(data []byte) (tls.Certificate, error) {
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return tls.Certificate{}, certificate.ErrNoCertificate
		}
		if b.Type == "CERTIFICATE" {
			leaf, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return tls.Certificate{}, fmt.Errorf("parse certificate: %w", err)
			}
			return tls.Certificate{Certificate: [][]byte{b.Bytes}, Leaf: leaf}, nil
		}
	}
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
		return fmt.Errorf("%s: cannot decrypt the private key (%w, %w) — wrong certificate_password: set apns.certificate_password to the key's password", where, ErrWrongPassword, err)
	case errors.Is(err, certificate.ErrFailedToParsePrivateKey):
		return fmt.Errorf("%s: cannot parse the private key (%w) — encrypted PKCS#8 keys are not supported: "+
			"decrypt it with `openssl pkey -in key.pem -out plain.pem`", where, err)
	}
	return fmt.Errorf("%s: %w — name the APNs certificate as Apple issued it, PEM or .p12", where, err)
}

// loadP12 decodes a PKCS#12 file, legacy (3DES, RC2) or as OpenSSL 3 writes
// it by default (PBES2 with AES-256-CBC), translating the errors an operator
// can act on. The leaf is the certificate that matches the key; the others
// (CA certificates) follow it.
func loadP12(where string, data []byte, password string) (tls.Certificate, error) {
	key, first, cas, err := pkcs12.DecodeChain(data, password)
	if err != nil {
		var notImpl pkcs12.NotImplementedError
		switch {
		case errors.Is(err, pkcs12.ErrIncorrectPassword), errors.Is(err, pkcs12.ErrDecryption):
			return tls.Certificate{}, fmt.Errorf("%s: wrong certificate_password for this .p12 file (%w: %w) — set apns.certificate_password to the password it was exported with", where, ErrWrongPassword, err)
		case errors.As(err, &notImpl):
			return tls.Certificate{}, fmt.Errorf("%s: cannot read this .p12 file (%w) — convert it to PEM with "+
				"`openssl pkcs12 -in cert.p12 -nodes -out cert.pem` and point certificate_file at the PEM file", where, err)
		}
		return tls.Certificate{}, fmt.Errorf("%s: not a readable PEM or PKCS#12 file (%w) — name the APNs certificate as Apple issued it, PEM or .p12", where, err)
	}
	out := tls.Certificate{PrivateKey: key}
	for _, c := range append([]*x509.Certificate{first}, cas...) {
		if out.Leaf == nil && keyMatches(c, key) {
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

// How a .p12 file's key and certificates are encrypted (Credentials.Encryption).
const (
	P12AES    = "AES (PBES2)"       // OpenSSL 3's default, go-pkcs12 Modern
	P12Legacy = "legacy (3DES/RC2)" // openssl pkcs12 -legacy, macOS Keychain
	P12None   = "not encrypted"
)

var (
	// oidPBES2 is PKCS#5 PBES2 (PBKDF2 and, as written, AES-CBC).
	oidPBES2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	// oidPKCS12PBE is the arc of PKCS#12's own PBE algorithms (3DES, RC2).
	oidPKCS12PBE = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1}
)

// p12Encryption tells from the algorithm identifiers of a decoded .p12
// file, which are not encrypted, how its contents are encrypted.
func p12Encryption(data []byte) string {
	pbes2, _ := asn1.Marshal(oidPBES2)
	legacy, _ := asn1.Marshal(asn1.ObjectIdentifier(append(append([]int(nil), oidPKCS12PBE...), 3)))
	switch {
	case bytes.Contains(data, pbes2):
		return P12AES
	// The DER of every algorithm in the arc begins the same way: type,
	// length and all but the last arc.
	case bytes.Contains(data, legacy[:len(legacy)-1]):
		return P12Legacy
	}
	return P12None
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

// attributeNames are the short names of the attribute types found in
// certificate subjects and issuers (RFC 4514 and OpenSSL's names).
var attributeNames = map[string]string{
	"2.5.4.3":                    "CN",
	"2.5.4.4":                    "SN",
	"2.5.4.5":                    "SERIALNUMBER",
	"2.5.4.6":                    "C",
	"2.5.4.7":                    "L",
	"2.5.4.8":                    "ST",
	"2.5.4.9":                    "STREET",
	"2.5.4.10":                   "O",
	"2.5.4.11":                   "OU",
	"2.5.4.12":                   "T",
	"2.5.4.17":                   "POSTALCODE",
	"2.5.4.42":                   "GN",
	"0.9.2342.19200300.100.1.1":  "UID",
	"0.9.2342.19200300.100.1.25": "DC",
	"1.2.840.113549.1.9.1":       "emailAddress",
}

// FormatName writes a certificate subject or issuer for humans, in the
// certificate's order (UID first in Apple's certificates; pkix.Name.String
// reverses it and shows the UID as hex): known attribute types by short
// name, unknown ones by OID, string values as text (escaped as in RFC 4514)
// and others as #hex DER, e.g.
// UID=com.apple.mail.XServer.<uuid>,CN=Apple Push Services: ...,C=US.
func FormatName(name pkix.Name) string {
	parts := make([]string, 0, len(name.Names))
	for _, atv := range name.Names {
		typ, ok := attributeNames[atv.Type.String()]
		if !ok {
			typ = atv.Type.String()
		}
		var value string
		if s, ok := atv.Value.(string); ok {
			value = escapeAttributeValue(s)
		} else if der, err := asn1.Marshal(atv.Value); err == nil {
			value = "#" + hex.EncodeToString(der)
		} else {
			value = fmt.Sprint(atv.Value)
		}
		parts = append(parts, typ+"="+value)
	}
	return strings.Join(parts, ",")
}

// escapeAttributeValue escapes s as RFC 4514 does: the separators and
// quotes anywhere, a space or # at the start, a space at the end.
func escapeAttributeValue(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case strings.ContainsRune(`,+"\<>;`, r),
			i == 0 && (r == ' ' || r == '#'),
			i == len(s)-1 && r == ' ':
			b.WriteByte('\\')
		case r < ' ':
			fmt.Fprintf(&b, "\\%02x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
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
