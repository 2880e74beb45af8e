//! Benchmark baseline: a plain file → TCP → file copy with std I/O and 1 MiB
//! buffers, no protocol and no verification. `bench/transfer.sh` compiles it with plain `rustc -O` (std only) and runs it next
//! to a real `sbcftp-peer get` of the same file and prints the ratio.
//!
//! Usage: `tcp_copy_baseline SRC DST [LISTEN_IP] [CONNECT_FROM_IP]`; prints
//! `bytes seconds MB/s` on one line.


use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

const BUF: usize = 1 << 20;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: tcp_copy_baseline SRC DST [LISTEN_IP]");
        std::process::exit(2);
    }
    let (src, dst) = (args[1].clone(), args[2].clone());
    let ip = args.get(3).cloned().unwrap_or_else(|| "127.0.0.2".into());
    let listener = TcpListener::bind((ip.as_str(), 0))?;
    let addr = listener.local_addr()?;
    let started = Instant::now();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut sock, _) = listener.accept()?;
        let mut f = File::open(&src)?;
        let mut buf = vec![0u8; BUF];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            sock.write_all(&buf[..n])?;
        }
    });
    let mut sock = TcpStream::connect(addr)?;
    let mut out = File::create(&dst)?;
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = sock.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
    out.sync_all()?;
    sender.join().unwrap()?;
    let secs = started.elapsed().as_secs_f64();
    println!("{total} {secs:.3} {:.1}", total as f64 / secs / 1e6);
    Ok(())
}
