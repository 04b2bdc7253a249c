//! The command line of each component: ZooKeeper's configuration and the
//! `agora` flags an operator would give each process on its host.

use std::path::Path;

use super::*;

impl Cluster {
    /// `agora master` on host `master{i}`.
    pub(super) fn master_args(&self, i: usize) -> Result<Vec<String>, ClusterError> {
        let s = &self.secrets;
        let d = |p: &Path| p.display().to_string();
        let host = format!("master{i}");
        let addr = self.net.host(&host)?.addr;
        let mut args: Vec<String> = vec![
            "master".into(),
            "--ip".into(),
            addr.to_string(),
            "--port".into(),
            MASTER_PORT.to_string(),
            "--hostname".into(),
            host.clone(),
            "--work-dir".into(),
            d(&self.dir.join(&host)),
            "--credentials".into(),
            d(&s.credentials),
            // pymesos speaks plain HTTP; it still authenticates.
            "--ssl-support-downgrade".into(),
            "--allocation-interval".into(),
            "200ms".into(),
        ];
        args.extend(s.ssl_flags("master"));
        args.extend(self.layout.master_flags.iter().cloned());
        args.extend(self.zk_flags("mesos"));
        Ok(args)
    }

    /// `agora agent` on host `agent{i}`, `agora` being the executor.
    pub(super) fn agent_args(&self, i: usize, agora: &Path) -> Result<Vec<String>, ClusterError> {
        let host = format!("agent{i}");
        let resources = self.layout.agent_resources.clone();
        self.agent_args_on(&host, &host, &resources, &format!("rack:r{i}"), agora)
    }

    /// An agent on `host`, its work dir `work` under the cluster's.
    pub(super) fn agent_args_on(
        &self,
        host: &str,
        work: &str,
        resources: &str,
        attributes: &str,
        agora: &Path,
    ) -> Result<Vec<String>, ClusterError> {
        let s = &self.secrets;
        let d = |p: &Path| p.display().to_string();
        let addr = self.net.host(host)?.addr;
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--master".into(),
            self.master_flag(),
            "--ip".into(),
            addr.to_string(),
            "--port".into(),
            AGENT_PORT.to_string(),
            "--hostname".into(),
            host.to_string(),
            "--work-dir".into(),
            d(&self.dir.join(work)),
            "--resources".into(),
            resources.to_string(),
            "--attributes".into(),
            attributes.to_string(),
            "--executor-path".into(),
            d(agora),
            "--credential".into(),
            d(&s.credential_file("agent")?),
            "--http-credentials".into(),
            d(&s.credentials),
        ];
        args.extend(s.ssl_flags("agent"));
        args.extend(self.layout.agent_flags.iter().cloned());
        Ok(args)
    }

    /// marathon-rs on host `marathon{i}`.
    pub(super) fn marathon_args(&self, i: usize) -> Result<Vec<String>, ClusterError> {
        let s = &self.secrets;
        let d = |p: &Path| p.display().to_string();
        let host = format!("marathon{i}");
        let addr = self.net.host(&host)?.addr;
        let mut args: Vec<String> = vec![
            "marathon".into(),
            "--master".into(),
            self.master_flag(),
            "--http-address".into(),
            addr.to_string(),
            "--http-port".into(),
            MARATHON_PORT.to_string(),
            "--hostname".into(),
            host.clone(),
            "--work-dir".into(),
            d(&self.dir.join(&host)),
            "--mesos-authentication-principal".into(),
            "marathon".into(),
            "--mesos-authentication-secret-file".into(),
            d(&s.secret_file("marathon")?),
        ];
        args.extend(self.zk_flags("marathon"));
        args.extend(s.ssl_flags("marathon"));
        args.extend(self.layout.marathon_flags.iter().cloned());
        Ok(args)
    }

    /// `agora dns` on host `dns`.
    pub(super) fn dns_args(&self) -> Result<Vec<String>, ClusterError> {
        let s = &self.secrets;
        let d = |p: &Path| p.display().to_string();
        let addr = self.net.host("dns")?.addr;
        let args: Vec<String> = vec![
            "dns".into(),
            "--master".into(),
            self.master_flag(),
            "--ip".into(),
            addr.to_string(),
            "--port".into(),
            DNS_PORT.to_string(),
            "--http-port".into(),
            DNS_HTTP_PORT.to_string(),
            "--credential".into(),
            d(&s.credential_file("dns")?),
            "--ssl-ca-file".into(),
            d(&s.ca),
        ];
        Ok(args)
    }

    /// `agora lb` on host `lb`.
    pub(super) fn lb_args(&self) -> Result<Vec<String>, ClusterError> {
        let s = &self.secrets;
        let d = |p: &Path| p.display().to_string();
        let lb = self.dir.join("lb");
        std::fs::create_dir_all(&lb)?;
        let args: Vec<String> = vec![
            "lb".into(),
            "--marathon".into(),
            (1..=self.layout.marathons)
                .map(|i| format!("https://marathon{i}:{MARATHON_PORT}"))
                .collect::<Vec<_>>()
                .join(","),
            "--marathon-ca-cert".into(),
            d(&s.ca),
            "--marathon-auth-credential-file".into(),
            d(&s.basic_file("admin")?),
            "--haproxy-config".into(),
            d(&lb.join("haproxy.cfg")),
            "--socket".into(),
            d(&lb.join("socket")),
            "--state-file".into(),
            d(&lb.join("state")),
            "--bind-http-port".into(),
            LB_HTTP_PORT.to_string(),
            "--resync".into(),
            "10s".into(),
        ];
        Ok(args)
    }

    /// ZooKeeper server `i`'s configuration and command.
    pub(super) fn zookeeper(&self, i: usize) -> Result<Vec<String>, ClusterError> {
        let dir = self.dir.join(format!("zk{i}"));
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        std::fs::write(data.join("myid"), i.to_string())?;
        let mut cfg = format!(
            "tickTime=500\ninitLimit=20\nsyncLimit=10\ndataDir={}\nclientPort={ZK_PORT}\n\
             admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr,stat\n",
            data.display()
        );
        if self.layout.zookeepers > 1 {
            for j in 1..=self.layout.zookeepers {
                cfg.push_str(&format!("server.{j}=zk{j}:2888:3888\n"));
            }
        }
        let cfg_path = dir.join("zoo.cfg");
        std::fs::write(&cfg_path, cfg)?;
        Ok(vec![
            "java".into(),
            "-Xmx256m".into(),
            "-cp".into(),
            format!("{ZK_JAR}:/usr/share/java/slf4j-simple.jar"),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain".into(),
            cfg_path.display().to_string(),
        ])
    }
}
