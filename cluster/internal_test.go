package cluster

import "time"

var farFuture = time.Now().Add(time.Hour)
