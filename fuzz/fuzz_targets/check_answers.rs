//! The protocol health checks' answer parsers: whatever a server sends, in
//! whatever pieces, every machine ends (pass or fail) without a panic.
//! The first byte picks the protocol, the second the size of the pieces.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rvs_proxy::config::{BodyPattern, Protocol, ProtocolCheck, TcpStep};
use rvs_proxy::health::dialogue::{self, Context, replay};

fuzz_target!(|data: &[u8]| {
    let (Some(&pick), Some(&size)) = (data.first(), data.get(1)) else {
        return;
    };
    let rest = &data[2..];
    let chunks: Vec<&[u8]> = rest.chunks(usize::from(size % 64) + 1).collect();
    let cx = Context {
        local: "127.0.0.1:40000".parse().unwrap(),
        peer: "127.0.0.1:25".parse().unwrap(),
        random: [pick; 32],
    };
    let n = Protocol::ALL.len();
    let mut d = if usize::from(pick) % (n + 1) == n {
        dialogue::for_steps(&[
            TcpStep::Send(b"PING\r\n".to_vec()),
            TcpStep::Expect(b"+PONG".to_vec()),
            TcpStep::ExpectRegex(BodyPattern::new("role:(master|slave)").unwrap()),
        ])
    } else {
        let protocol = Protocol::ALL[usize::from(pick) % (n + 1)];
        let check = ProtocolCheck {
            protocol,
            tls: false,
            login: Some("monitor".into()),
            password: Some("pw".into()),
            database: Some("health".into()),
            query: "SELECT 1".into(),
            base: "dc=example".into(),
            expect_dn: Some(BodyPattern::new("^dc=").unwrap()),
            path: (pick & 0x80 != 0).then(|| "/ok.txt".into()),
            expect_body: Some(BodyPattern::new("ok").unwrap()),
            helo_name: "checker".into(),
            secret: Some("s".into()),
            uri: None,
            sip_tcp: pick & 0x40 != 0,
        };
        let udp = check.udp();
        let mut d = dialogue::for_protocol(&check, cx);
        let _ = replay(d.as_mut(), &chunks, udp, rest);
        return;
    };
    let _ = replay(d.as_mut(), &chunks, false, rest);
});
