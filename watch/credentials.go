package watch

import (
	"context"
	"errors"
)

// ErrNoCredential is wrapped by a Credentials that has nothing to log in
// with for a user (auth = "captured" before the user's next login through
// the proxy). The watcher then waits for Manager.Sync instead of retrying.
var ErrNoCredential = errors.New("no credential: waiting for the user's next login")

// Credentials tells watchers how to log in to the backend as a user.
type Credentials interface {
	// For returns the login name and password for user. An error wrapping
	// ErrNoCredential means there is none yet.
	For(ctx context.Context, user string) (login, password string, err error)
	// Refused is told that the backend refused login and password for good
	// (a NO that is not temporary), so that they are not tried again.
	Refused(ctx context.Context, user, login, password string)
}

// MasterCredentials logs in as each user through a Dovecot master user:
// "<user><separator><master>" with the master's password.
type MasterCredentials struct {
	User, Password, Separator string
}

// For implements Credentials.
func (mc MasterCredentials) For(_ context.Context, user string) (string, string, error) {
	return user + mc.Separator + mc.User, mc.Password, nil
}

// Refused implements Credentials: the master password stays configured.
func (MasterCredentials) Refused(context.Context, string, string, string) {}
