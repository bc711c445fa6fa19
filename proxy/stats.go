package proxy

import "sync/atomic"

// Stats is a snapshot of what the server has done, for monitoring.
// Counters count since New.
type Stats struct {
	// Open is the client connections being served now (those refused by
	// the limits not included); Listeners the listeners accepting.
	Open, Listeners int
	// AcceptedTLS and AcceptedSTARTTLS count the connections accepted on
	// each kind of listener, those refused by the limits included.
	AcceptedTLS, AcceptedSTARTTLS uint64
	// RefusedMax and RefusedPerIP count connections turned away by
	// MaxConnections and MaxConnectionsPerIP.
	RefusedMax, RefusedPerIP uint64
	// RefusedProxyProtocol counts connections closed over the PROXY
	// protocol: a trusted balancer's missing or broken header, or a header
	// from an address not trusted to send one.
	RefusedProxyProtocol uint64
	// LoginsOK counts LOGIN and AUTHENTICATE commands the backend accepted,
	// LoginsFailed those it refused, LoginsRefused those the proxy refused
	// without asking it (before STARTTLS, a master-user name, a mechanism
	// or a command it does not take).
	LoginsOK, LoginsFailed, LoginsRefused uint64
	// RegistrationsOK counts XAPPLEPUSHSERVICE registrations stored;
	// RegistrationsBad commands refused as malformed or out of place
	// (before login, a session whose user is unknown); RegistrationsLimit
	// new devices over store.MaxRegistrationsPerUser; RegistrationsError
	// registrations the store failed to take.
	RegistrationsOK, RegistrationsBad, RegistrationsLimit, RegistrationsError uint64
}

// counters are the Server's statistics, updated by its sessions.
type counters struct {
	acceptedTLS, acceptedSTARTTLS                                             atomic.Uint64
	refusedMax, refusedPerIP, refusedProxyProtocol                            atomic.Uint64
	loginsOK, loginsFailed, loginsRefused                                     atomic.Uint64
	registrationsOK, registrationsBad, registrationsLimit, registrationsError atomic.Uint64
}

// Stats returns the current statistics; it is safe to call from any
// goroutine, at any time.
func (s *Server) Stats() Stats {
	c := &s.stats
	st := Stats{
		AcceptedTLS:          c.acceptedTLS.Load(),
		AcceptedSTARTTLS:     c.acceptedSTARTTLS.Load(),
		RefusedMax:           c.refusedMax.Load(),
		RefusedPerIP:         c.refusedPerIP.Load(),
		RefusedProxyProtocol: c.refusedProxyProtocol.Load(),
		LoginsOK:             c.loginsOK.Load(),
		LoginsFailed:         c.loginsFailed.Load(),
		LoginsRefused:        c.loginsRefused.Load(),
		RegistrationsOK:      c.registrationsOK.Load(),
		RegistrationsBad:     c.registrationsBad.Load(),
		RegistrationsLimit:   c.registrationsLimit.Load(),
		RegistrationsError:   c.registrationsError.Load(),
	}
	s.mu.Lock()
	st.Open, st.Listeners = len(s.sessions), len(s.listeners)
	s.mu.Unlock()
	return st
}

// countLogin counts the answer to a LOGIN or AUTHENTICATE the backend was
// sent: replaced is true when the proxy ended the exchange with its own
// verdict (a refused SASL identity).
func (s *session) countLogin(ok, replaced bool) {
	c := &s.srv.stats
	switch {
	case replaced:
		c.loginsRefused.Add(1)
	case ok:
		c.loginsOK.Add(1)
	default:
		c.loginsFailed.Add(1)
	}
}

// refusedLogin counts a LOGIN or AUTHENTICATE the proxy answered itself.
func (s *session) refusedLogin() { s.srv.stats.loginsRefused.Add(1) }
