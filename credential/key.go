package credential

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/xapsproxy/xapsproxy/config"
)

// KeySize is the size of the key file: an AES-256 key.
const KeySize = 32

// keyName is the configuration key every key file error names.
const keyName = "watch.secret_key_file"

// sealVersion is the first byte of every sealed credential, so that another
// format can come later.
const sealVersion = 1

// errSealed is the one cause of every credential that cannot be opened: a
// wrong key, another user's row, a damaged value. Nothing more is said, so
// that no error ever carries anything of the plaintext.
var errSealed = errors.New("credential: cannot open a sealed credential (wrong key or user, or damaged)")

// Key seals and opens credentials with AES-256-GCM. It is safe for
// concurrent use.
type Key struct {
	aead cipher.AEAD
}

// NewKey returns a Key for a 32-byte secret. The caller may clear secret
// afterwards.
func NewKey(secret []byte) (*Key, error) {
	if len(secret) != KeySize {
		return nil, fmt.Errorf("credential: key is %d bytes, not %d", len(secret), KeySize)
	}
	block, err := aes.NewCipher(secret)
	if err != nil {
		return nil, fmt.Errorf("credential: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("credential: %w", err)
	}
	return &Key{aead: aead}, nil
}

// additionalData binds a sealed value to its user: a row copied to another
// user does not open.
func additionalData(user string) []byte {
	return append([]byte("xapsproxy credential v1\x00"), user...)
}

// Seal encrypts password for user: version byte, a random 12-byte nonce,
// then the ciphertext with its tag.
func (k *Key) Seal(user string, password []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(password)+k.aead.Overhead())
	out[0] = sealVersion
	if _, err := io.ReadFull(rand.Reader, out[1:]); err != nil {
		return nil, fmt.Errorf("credential: nonce: %w", err)
	}
	return k.aead.Seal(out, out[1:], password, additionalData(user)), nil
}

// Open decrypts what Seal made for user. The caller should clear the
// result once done with it.
func (k *Key) Open(user string, sealed []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(sealed) < 1+ns+k.aead.Overhead() || sealed[0] != sealVersion {
		return nil, errSealed
	}
	plain, err := k.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], additionalData(user))
	if err != nil {
		return nil, errSealed
	}
	return plain, nil
}

// LoadKey reads the key file at path, creating it when it does not exist:
// 32 bytes from crypto/rand, mode 0600, created exclusively (O_EXCL) in a
// directory that must exist. A key file that its group or others have any
// access to, or that is not exactly 32 bytes long, is refused. Errors are
// *config.Error naming watch.secret_key_file and the fix.
func LoadKey(path string) (*Key, error) {
	secret, err := readKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err = createKey(path); err == nil || errors.Is(err, fs.ErrExist) {
			secret, err = readKey(path) // ours, or one made meanwhile
		}
	}
	if err != nil {
		return nil, err
	}
	defer clear(secret)
	return NewKey(secret)
}

// readKey returns the key at path; its errors are *config.Error, except a
// missing file, which is the bare fs.ErrNotExist.
func readKey(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fs.ErrNotExist
	}
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, &config.Error{Key: keyName, Value: path, Err: errors.New("is a symbolic link"),
				Fix: "name the key file itself"}
		}
		return nil, config.FileError(keyName, path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, config.FileError(keyName, path, err)
	}
	switch {
	case !fi.Mode().IsRegular():
		return nil, &config.Error{Key: keyName, Value: path, Err: errors.New("is not a regular file"),
			Fix: "name a file holding the 32-byte key, or one that does not exist yet (it is then created)"}
	case fi.Mode().Perm()&0o077 != 0:
		return nil, &config.Error{Key: keyName, Value: path,
			Err: fmt.Errorf("is open to its group or others (mode %04o)", fi.Mode().Perm()),
			Fix: "chmod 600 " + path + " (it decrypts the stored passwords)"}
	case fi.Size() != KeySize:
		return nil, &config.Error{Key: keyName, Value: path,
			Err: fmt.Errorf("is %d bytes, not %d", fi.Size(), KeySize),
			Fix: "it must hold exactly 32 random bytes: restore the right file, or remove it to have a new key made " +
				"(stored passwords are then lost until each user logs in again)"}
	}
	secret := make([]byte, KeySize)
	if _, err := io.ReadFull(f, secret); err != nil {
		clear(secret)
		return nil, config.FileError(keyName, path, err)
	}
	return secret, nil
}

// createKey writes a new random key at path, failing with fs.ErrExist if
// a file is already there.
func createKey(path string) error {
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return &config.Error{Key: keyName, Value: path, Err: errors.New("its directory does not exist"),
			Fix: "create " + dir + " (mode 0700, owned by the user xapsproxy runs as), or name a file in an existing directory"}
	}
	secret := make([]byte, KeySize)
	defer clear(secret)
	if _, err := io.ReadFull(rand.Reader, secret); err != nil {
		return fmt.Errorf("credential: new key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fs.ErrExist
	}
	if err != nil {
		return config.FileError(keyName, path, err)
	}
	_, err = f.Write(secret)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path) // a short key would be refused at the next start
		return config.FileError(keyName, path, err)
	}
	// The file's name is durable too, or a crash could lose the key
	// after passwords were sealed with it.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
