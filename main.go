// Command narun is a multi-call binary: the applet to run is chosen by the
// name it was invoked as, or by its first argument (see package applets).
package main

import (
	"os"

	"github.com/narun/narun/applets"
)

func main() {
	os.Exit(applets.Main(os.Args, applets.StdIO()))
}
