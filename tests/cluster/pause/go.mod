module champion.dev/pause

go 1.24
