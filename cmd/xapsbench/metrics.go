package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The xapsproxy metrics the reconnect benchmark reads.
const (
	metricWatching         = `xapsproxy_watchers{state="watching"}`
	metricGreetingTimeouts = "xapsproxy_backend_greeting_timeouts_total"
	metricReconnects       = "xapsproxy_backend_reconnects_total"
	metricsPoll            = 50 * time.Millisecond
)

// metrics maps a sample (name and labels, as written in the Prometheus
// text format) to its value.
type metrics map[string]float64

// scrapeMetrics fetches and parses a /metrics page.
func scrapeMetrics(ctx context.Context, url string) (metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", res.Status)
	}
	return parseMetrics(res.Body)
}

// parseMetrics reads the Prometheus text format: comment lines, and samples
// "name{labels} value" (no timestamps, which client_golang never writes).
func parseMetrics(r io.Reader) (metrics, error) {
	m := make(metrics)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("metrics: malformed line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: line %q: %w", line, err)
		}
		m[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return m, nil
}
