//! A DNS responder on 127.0.0.1 for tests of backends given by name: it
//! answers A queries from a table the test changes as it runs, NXDOMAIN for
//! names not in it, and SERVFAIL to everything while told to fail. UDP
//! only, which is what tailcut asks first.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

#[derive(Default)]
struct Table {
    /// Lower-case name without the final dot -> addresses and TTL.
    records: Mutex<HashMap<String, (Vec<Ipv4Addr>, u32)>>,
    failing: AtomicBool,
    queries: AtomicUsize,
}

/// A running responder.
pub struct DnsResponder {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    table: Arc<Table>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsResponder {
    /// Starts answering on 127.0.0.1 with an empty table.
    pub async fn start() -> DnsResponder {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        let table = Arc::new(Table::default());
        let task = tokio::spawn({
            let table = table.clone();
            async move {
                let mut buffer = [0u8; 1500];
                while let Ok((n, from)) = socket.recv_from(&mut buffer).await {
                    if let Some(answer) = answer(&table, &buffer[..n]) {
                        let _ = socket.send_to(&answer, from).await;
                    }
                }
            }
        });
        DnsResponder { addr, table, task }
    }

    /// From now on `name` has these A records with this TTL (seconds).
    pub fn set(&self, name: &str, addresses: &[Ipv4Addr], ttl: u32) {
        self.table
            .records
            .lock()
            .expect("lock")
            .insert(name.to_owned(), (addresses.to_vec(), ttl));
    }

    /// Answers SERVFAIL to everything while `failing`.
    pub fn fail(&self, failing: bool) {
        self.table.failing.store(failing, Ordering::Relaxed);
    }

    /// Queries answered so far.
    pub fn queries(&self) -> usize {
        self.table.queries.load(Ordering::Relaxed)
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(table: &Table, query: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    table.queries.fetch_add(1, Ordering::Relaxed);
    let mut response = Message::new();
    response
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    for question in query.queries() {
        response.add_query(question.clone());
    }
    if table.failing.load(Ordering::Relaxed) {
        response.set_response_code(ResponseCode::ServFail);
        return response.to_vec().ok();
    }
    let Some(question) = query.queries().first() else {
        response.set_response_code(ResponseCode::FormErr);
        return response.to_vec().ok();
    };
    let name = question.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let records = table.records.lock().expect("lock").get(&name).cloned();
    match records {
        None => {
            response.set_response_code(ResponseCode::NXDomain);
        }
        Some((addresses, ttl)) => {
            // AAAA and others: the name exists, with no such records.
            if question.query_type() == RecordType::A {
                for ip in addresses {
                    let owner: Name = question.name().clone();
                    response.add_answer(Record::from_rdata(owner, ttl, RData::A(A(ip))));
                }
            }
        }
    }
    response.to_vec().ok()
}
