module github.com/lockex/lockex

go 1.26

require (
	github.com/caarlos0/env/v10 v10.0.0
	github.com/go-zookeeper/zk v1.0.4
	github.com/lmittmann/tint v1.2.1
	github.com/spf13/pflag v1.1.0
)
