package push

import (
	"container/heap"
	"time"
)

// dueEntry says that job key is due at due. Entries are never updated or
// removed in place: a job whose due time changes gets a new entry with its
// new generation, and the old one is dropped when it comes to the top.
type dueEntry struct {
	due time.Time
	key jobKey
	gen uint64
}

// dueHeap is a min-heap of entries by due time: the scheduler finds the
// next job to send, and when to wake, without looking at every job.
type dueHeap []dueEntry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = dueEntry{} // the key's strings may go
	*h = old[:len(old)-1]
	return e
}

// queue records j's current due time in the heap. Call it whenever j.due
// changes while j is not running.
func (p *Pusher) queue(k jobKey, j *job) {
	p.gen++ // never reused, so an entry of a job since gone matches no new one
	j.gen = p.gen
	heap.Push(&p.due, dueEntry{due: j.due, key: k, gen: j.gen})
	if len(p.due) > 2*len(p.jobs)+1024 {
		p.compact()
	}
}

// current reports whether e is the entry of a job waiting to be sent.
func (p *Pusher) current(e dueEntry) bool {
	j := p.jobs[e.key]
	return j != nil && !j.running && j.gen == e.gen
}

// top drops stale entries and returns the earliest current one.
func (p *Pusher) top() (dueEntry, bool) {
	for len(p.due) > 0 {
		if e := p.due[0]; p.current(e) {
			return e, true
		}
		heap.Pop(&p.due)
	}
	return dueEntry{}, false
}

// compact rebuilds the heap from the jobs waiting, when stale entries (due
// times changed since) have piled up.
func (p *Pusher) compact() {
	h := p.due[:0]
	for _, e := range p.due {
		if p.current(e) {
			h = append(h, e)
		}
	}
	p.due = h
	heap.Init(&p.due)
}
