package store

import (
	"errors"
	"fmt"
	"testing"
)

func TestRegisterLimitPerUser(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		for i := range MaxRegistrationsPerUser {
			mustRegister(t, s, reg("alice", fmt.Sprintf("%064x", i)))
		}
		if err := s.Register(t.Context(), reg("alice", fmt.Sprintf("%064x", MaxRegistrationsPerUser))); !errors.Is(err, ErrLimit) {
			t.Fatalf("device %d: err = %v, want ErrLimit", MaxRegistrationsPerUser+1, err)
		}
		// Renewing a known device and other users are not affected.
		mustRegister(t, s, reg("alice", fmt.Sprintf("%064x", 0)), reg("bob", fmt.Sprintf("%064x", 0)))
		regs, err := s.Registrations(t.Context(), "alice")
		if err != nil || len(regs) != MaxRegistrationsPerUser {
			t.Fatalf("%d registrations, %v", len(regs), err)
		}
	})
}

func TestPing(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		if err := s.Ping(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
}
