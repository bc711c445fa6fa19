package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// ProxyProtocolPrefixes returns ProxyProtocol as networks (an address is
// its own /32 or /128); entries that do not parse (Load refuses them) are
// left out.
func (p Proxy) ProxyProtocolPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range p.ProxyProtocol {
		if pre, err := parsePrefix(s); err == nil {
			out = append(out, pre)
		}
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("zone %q not allowed", a.Zone())
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
