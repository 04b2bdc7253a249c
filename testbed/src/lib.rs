//! A cluster of hosts on one machine, for the multi-host tests and
//! `agora dev --hosts`.
//!
//! [`net`] makes hosts out of network namespaces: one private switch (a
//! bridge in a namespace of its own), each host a namespace with one veth
//! leg on it, its own IPv4 address in 10.77.0.0/24 and a hosts file naming
//! every other host. Nothing is added to the machine's own namespace, so two
//! testbeds (two tests running at once) never see each other and their
//! traffic never leaves the machine. The process that made a testbed reaches
//! into it through [`net::Network::forward`] (a loopback port whose
//! connections are made from inside a host).
//!
//! [`cluster`] runs real `agora` processes (and Debian's ZooKeeper and
//! HAProxy) on those hosts, secured as every Agora cluster is: one CA, a
//! certificate per role valid for the hosts' names, credentials per
//! component ([`secrets`]). Tests kill, restart and cut off hosts through it.

pub mod cluster;
pub mod net;
pub mod secrets;

pub use cluster::{Cluster, Layout};
pub use net::{Host, Network};
