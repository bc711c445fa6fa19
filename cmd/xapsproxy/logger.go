package main

import (
	"io"
	"log/slog"

	"github.com/xapsproxy/xapsproxy/config"
)

// newConfigLogger logs to w in the format and from the level [log] names;
// debug (a command's -debug flag) lowers the level to debug whatever the
// file says.
func newConfigLogger(w io.Writer, lc config.Log, debug bool) *slog.Logger {
	level := logLevel(lc.Level)
	if debug {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: humanDurations}
	if lc.Format == config.LogFormatJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// logLevel is the slog level of a validated log.level; "" is info.
func logLevel(s string) slog.Level {
	switch s {
	case config.LogLevelDebug:
		return slog.LevelDebug
	case config.LogLevelWarn:
		return slog.LevelWarn
	case config.LogLevelError:
		return slog.LevelError
	}
	return slog.LevelInfo
}

// humanDurations writes durations as time.Duration's String ("1m30s")
// rather than JSON's integer nanoseconds. slog's handlers call it for every
// attribute after resolving LogValuers, those of Logger.With and those inside
// groups included, so no duration escapes it.
func humanDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}
