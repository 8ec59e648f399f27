// pause is the pod sandbox's process: it holds the pod's namespaces open and sleeps until the
// kubelet stops the sandbox. Built static (CGO_ENABLED=0) into an image with nothing else in it.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
}
