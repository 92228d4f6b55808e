// Package kube is the end-to-end Kubernetes kit: the chart's pods run for
// real on podman (host networking, ZooKeeper on 127.0.0.1), with the lockex
// image built from the repository's Dockerfile and plain busybox workload
// images made here, and every chart rendering installed with helm on a real
// kube-apiserver and etcd started on loopback ports. No registry is used:
// every image is made locally. See its tests.
package kube
