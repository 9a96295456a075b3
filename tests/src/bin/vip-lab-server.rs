//! `vip-lab-server`: the backend server of the lab. It says who it is.
//!
//! TCP on `--port` (all addresses, both families):
//! - a first line `GET /PATH HTTP/1.x` is HTTP: `/healthz` → 200 `ok`, `/whoami` → 200
//!   and the name, anything else 404; the connection closes after the answer;
//! - otherwise line-based: `whoami` → the name; any other line is echoed back as is.
//!
//! UDP on each `--udp ADDR:PORT` (bound to that address, so answers to a VIP leave from
//! the VIP, as direct server return needs): `whoami` → the name, anything else echoed.
//!
//! Run inside a backend namespace: `ip netns exec NS vip-lab-server --name b1 --port 80
//! --udp 198.18.100.1:80`.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    thread,
};

fn main() {
    let mut name = None;
    let mut port = None;
    let mut udp = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--name" => name = Some(value),
            "--port" => port = Some(value.parse::<u16>().unwrap_or_else(|_| usage("bad --port"))),
            "--udp" => udp.push(
                value
                    .parse::<SocketAddr>()
                    .unwrap_or_else(|_| usage("bad --udp address")),
            ),
            _ => usage(&format!("unknown argument {arg}")),
        }
    }
    let name: &'static str = Box::leak(
        name.unwrap_or_else(|| usage("--name is required"))
            .into_boxed_str(),
    );
    let port = port.unwrap_or_else(|| usage("--port is required"));

    // [::] with IPV6_V6ONLY off (Linux default) takes IPv4 too.
    let listener = TcpListener::bind(("::", port)).unwrap_or_else(|e| {
        eprintln!("vip-lab-server {name}: cannot listen on TCP port {port}: {e}");
        std::process::exit(1)
    });
    for addr in udp {
        let socket = UdpSocket::bind(addr).unwrap_or_else(|e| {
            eprintln!("vip-lab-server {name}: cannot bind UDP {addr}: {e} (is the address on an interface?)");
            std::process::exit(1)
        });
        thread::spawn(move || serve_udp(name, socket));
    }
    println!("vip-lab-server {name}: listening on TCP port {port}");
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let _ = serve_tcp(name, stream);
        });
    }
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "vip-lab-server: {problem}\nusage: vip-lab-server --name NAME --port PORT [--udp ADDR:PORT]..."
    );
    std::process::exit(2)
}

fn serve_tcp(name: &str, stream: TcpStream) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(());
    }
    if let Some(rest) = line.strip_prefix("GET ") {
        let path = rest.split_whitespace().next().unwrap_or("");
        // Read the headers up to the blank line, so the client sees a clean close.
        let mut header = String::new();
        while reader.read_line(&mut header)? > 2 {
            header.clear();
        }
        let (status, body) = match path {
            "/healthz" => ("200 OK", "ok\n".to_string()),
            "/whoami" => ("200 OK", format!("{name}\n")),
            _ => ("404 Not Found", "not found\n".to_string()),
        };
        write!(
            writer,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    loop {
        if line.trim_end() == "whoami" {
            writer.write_all(format!("{name}\n").as_bytes())?;
        } else {
            writer.write_all(line.as_bytes())?;
        }
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
    }
}

fn serve_udp(name: &str, socket: UdpSocket) {
    let mut buf = [0u8; 65536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let msg = &buf[..n];
        if msg.trim_ascii() == b"whoami" {
            let _ = socket.send_to(format!("{name}\n").as_bytes(), from);
        } else {
            let _ = socket.send_to(msg, from);
        }
    }
}
