package cluster

import (
	"crypto/sha256"
	"hash/fnv"
)

// userKey is how the leases table and the notifications name a user.
type userKey [sha256.Size]byte

func keyOf(user string) userKey { return sha256.Sum256([]byte(user)) }

// desired is the owner rendezvous hashing gives user among live: the
// instance with the highest score(instance, user). Every instance that sees
// the same live set computes the same owner, and when an instance joins or
// leaves only the accounts it wins or held move. "" if live is empty.
func desired(user string, live []string) string {
	hu := fnv64(user)
	best, bestScore := "", uint64(0)
	for _, id := range live {
		s := mix64(hu ^ fnv64(id))
		if best == "" || s > bestScore || (s == bestScore && id > best) {
			best, bestScore = id, s
		}
	}
	return best
}

func fnv64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// mix64 is splitmix64's finalizer: every input bit affects every output bit.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
