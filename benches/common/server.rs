//! The real server for the benches that drive it over gRPC:
//! `stratum::run` in-process on its own thread and tokio runtime, on
//! 127.0.0.1 port 0 over a temporary data directory, default durability.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// A server on its own thread and tokio runtime; stopped on drop.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn start<F, Fut>(name: &str, serve: F) -> Running
    where
        F: FnOnce(std::sync::mpsc::Sender<SocketAddr>, tokio::sync::oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready, addr) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("server runtime");
                rt.block_on(serve(ready, stopped));
            })
            .expect("server thread");
        let addr = addr.recv_timeout(Duration::from_secs(120)).expect("server started");
        Running { addr, stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn start_stratum(dir: &std::path::Path) -> Running {
    let config = stratum_config(dir);
    Running::start("stratum-server", move |ready, stopped| async move {
        stratum::run(config, move |addr| ready.send(addr).expect("ready"), async {
            let _ = stopped.await;
        })
        .await
        .expect("stratum server");
    })
}

pub fn stratum_config(dir: &std::path::Path) -> stratum::Config {
    stratum::Config::parse_from([
        "lse_server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--sync",
        "always",
        "--log",
        "warn",
    ])
}
