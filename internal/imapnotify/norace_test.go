//go:build !race

package imapnotify

const raceEnabled = false
