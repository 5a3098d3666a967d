//! The store's metrics at `/metrics`: appends, append and flush latency, group sizes, the store's
//! size; present, and moving under writes. The registry is the process's, shared by every test
//! server in this binary, so only growth is asserted.

use crate::helpers::{TestApp, openai, register_id, spawn_app};

/// The value of an unlabelled sample `name` in the `/metrics` text.
async fn sample(app: &TestApp, name: &str) -> f64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} is not in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_store_metrics_move_under_writes() {
    let app = spawn_app().await;
    let names = [
        "keyledger_events_appended_total",
        "keyledger_append_seconds_count",
        "keyledger_flush_seconds_count",
        "keyledger_group_appends_count",
    ];
    let mut before = Vec::new();
    for name in names {
        before.push(sample(&app, name).await);
    }
    let tenant = app.tenant("metrics@example.com").await;
    let writes: Vec<_> = (0..8)
        .map(|i| {
            let (app, token) = (&app, &tenant.token);
            async move {
                register_id(
                    app,
                    token,
                    &openai(&format!("m{i}"), "sk-metrics-0123456789"),
                )
                .await
            }
        })
        .collect();
    futures_util::future::join_all(writes).await;
    for (name, was) in names.iter().zip(before) {
        let now = sample(&app, name).await;
        assert!(now > was, "{name}: {was} -> {now}");
    }
    assert!(sample(&app, "keyledger_events_appended_total").await >= 9.0);
    assert!(sample(&app, "keyledger_store_size_bytes").await > 0.0);
    assert!(sample(&app, "keyledger_flush_seconds_sum").await > 0.0);
    app.stop().await;
}
