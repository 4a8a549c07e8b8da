//! A throwaway consumer of everything published to one topic exchange: the exchange
//! (durable, as valet declares it), an exclusive queue bound with `#`, no acks. For
//! the tests and benchmarks that watch valet's events on a real RabbitMQ.

use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;

/// Connects to `broker` and consumes every message published to `exchange`.
pub async fn consume_all(broker: &str, exchange: &str) -> (lapin::Connection, lapin::Consumer) {
    let connection = lapin::Connection::connect(broker, lapin::ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| {
            panic!("RabbitMQ is needed at {broker}: start it with rabbitmq-server -detached ({e})")
        });
    let channel = connection.create_channel().await.expect("channel");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            lapin::ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await
        .expect("queue");
    channel
        .queue_bind(
            queue.name().as_str().into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let consumer = channel
        .basic_consume(
            queue.name().as_str().into(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .expect("consume");
    (connection, consumer)
}
