//! Serves a CGI program on 127.0.0.1 with the test suite's HTTP server (keep-alive, one thread per
//! connection), for `scripts/bench-render.sh`: `cgi_serve PORT_FILE PROGRAM [NAME=VALUE…]`.
//! Writes the chosen port to PORT_FILE and serves until its standard input closes.

#[path = "../tests/it/support/http.rs"]
#[allow(dead_code)]
mod http;

use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port_file, program, env @ ..] = &args[..] else {
        eprintln!("usage: cgi_serve PORT_FILE PROGRAM [NAME=VALUE...]");
        std::process::exit(2);
    };
    let env = env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let server = http::cgi_server(program.into(), env);
    let port = server.url().rsplit(':').next().unwrap().to_string();
    std::fs::write(port_file, port).expect("write port file");
    // Serve until the parent closes our standard input (or dies).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    eprintln!("cgi_serve: {} requests", server.requests());
}
