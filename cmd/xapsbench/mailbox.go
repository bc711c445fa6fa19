package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// words make the message bodies look like mail text rather than noise.
func words() []string {
	return []string{
		"the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be",
		"by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have",
		"an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
		"been", "if", "more", "when", "will", "would", "who", "so", "no", "meeting", "schedule",
		"invoice", "attached", "please", "review", "thanks", "regards", "project", "deadline",
		"tomorrow", "morning", "report", "quarterly", "numbers", "update", "server", "mailbox",
		"Grüße", "café", "naïve", "résumé", "straße", "déjà", "vu",
	}
}

// makeMessage returns an RFC 5322 message of exactly size bytes (CRLF line
// endings, text lines of at most 76 bytes), deterministic for seq.
func makeMessage(seq, size int) []byte {
	rng := rand.New(rand.NewPCG(uint64(seq), 0x9e3779b97f4a7c15))
	dict := words()
	var b bytes.Buffer
	b.Grow(size)
	date := time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Hour)
	fmt.Fprintf(&b, "From: Bob Sender <bob@example.com>\r\n"+
		"To: Alice <alice@example.com>\r\n"+
		"Subject: Benchmark message %d\r\n"+
		"Date: %s\r\n"+
		"Message-ID: <bench-%d@example.com>\r\n"+
		"MIME-Version: 1.0\r\n"+
		"Content-Type: text/plain; charset=utf-8\r\n"+
		"Content-Transfer-Encoding: 8bit\r\n"+
		"\r\n", seq, date.Format(time.RFC1123Z), seq)
	line := make([]byte, 0, 80)
	for b.Len() < size {
		line = line[:0]
		for {
			w := dict[rng.IntN(len(dict))]
			if len(line)+1+len(w) > 74 {
				break
			}
			if len(line) > 0 {
				line = append(line, ' ')
			}
			line = append(line, w...)
		}
		line = append(line, '\r', '\n')
		if left := size - b.Len(); len(line) > left {
			// Last line: fill exactly, still ending in CRLF.
			line = bytes.Repeat([]byte("."), max(left-2, 0))
			line = append(line, "\r\n"[:min(left, 2)]...)
		}
		b.Write(line)
	}
	return b.Bytes()
}

// appendMessage stores msg in mailbox with a non-synchronizing literal
// (LITERAL+, which Dovecot offers).
func (c *imapConn) appendMessage(mailbox string, msg []byte) error {
	c.tag++
	tag := "x" + strconv.Itoa(c.tag) + " "
	head := tag + "APPEND " + mailbox + " {" + strconv.Itoa(len(msg)) + "+}\r\n"
	for _, p := range [][]byte{[]byte(head), msg, []byte("\r\n")} {
		if _, err := c.conn.Write(p); err != nil {
			return fmt.Errorf("APPEND: %w", err)
		}
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return fmt.Errorf("APPEND: %w", err)
		}
		if rest, ok := bytes.CutPrefix(line, []byte(tag)); ok {
			if !bytes.HasPrefix(rest, []byte("OK")) {
				return fmt.Errorf("APPEND: %s", bytes.TrimSpace(line))
			}
			return nil
		}
	}
}

// fillMailbox appends count messages of msgSize bytes to alice's INBOX,
// directly on Dovecot, and returns their total size.
func fillMailbox(ctx context.Context, direct target, count, msgSize int) (int64, error) {
	c, err := dialIMAP(ctx, direct, 64<<10)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.deadline(ctx, 5*time.Minute); err != nil {
		return 0, err
	}
	if err := c.login(benchUser, benchPassword); err != nil {
		return 0, err
	}
	var total int64
	for i := 1; i <= count; i++ {
		msg := makeMessage(i, msgSize)
		if err := c.appendMessage("INBOX", msg); err != nil {
			return total, fmt.Errorf("message %d: %w", i, err)
		}
		total += int64(len(msg))
	}
	return total, nil
}
