package config

import (
	"errors"
	"net"
	"strings"
)

// MinAdminTokenLen is the shortest admin token accepted, in bytes.
const MinAdminTokenLen = 16

const adminTokenHint = "e.g. the output of `openssl rand -hex 32`"

func (a *Admin) validate() error {
	if a.Listen != "" {
		if _, _, err := net.SplitHostPort(a.Listen); err != nil {
			return keyError("admin.listen", "%q is not host:port: %v", a.Listen, err)
		}
	}
	key := "admin.token"
	switch {
	case a.Token != "" && a.TokenFile != "":
		return keyError(key, "set token or token_file, not both")
	case a.TokenFile != "":
		key = "admin.token_file"
		data, err := ReadSecretFile(key, a.TokenFile)
		if err != nil {
			return err
		}
		a.Token = strings.TrimRight(string(data), "\r\n")
		if a.Token == "" {
			return &Error{Key: key, Value: a.TokenFile, Err: errors.New("file is empty"),
				Fix: "write the token in it, on one line: " + adminTokenHint}
		}
	}
	if a.Token != "" {
		if err := checkSecret(a.Token); err != nil {
			a.Token = ""
			value := ""
			if key == "admin.token_file" {
				value = a.TokenFile
			}
			return &Error{Key: key, Value: value, Err: err, Fix: "use at least 16 letters, digits or -._~+/=, " + adminTokenHint}
		}
		return nil
	}
	if a.Listen != "" && !IsLoopback(a.Listen) {
		return keyError("admin.token", "required when admin.listen (%q) is not a loopback address — set token or token_file (%s), or listen on 127.0.0.1", a.Listen, adminTokenHint)
	}
	return nil
}

// IsLoopback reports whether the host of addr (host:port) is a loopback
// address or "localhost"; an empty host (every address) is not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
