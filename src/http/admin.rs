//! The admin listener: `GET /metrics` (Prometheus exposition), apart from
//! the API port where `GET /metrics` is the original's legacy alias.

use actix_web::{App, HttpResponse, HttpServer, dev::Server, web};
use sea_orm::DatabaseConnection;

/// Serves `GET /metrics` on its own listener.
pub fn metrics_server(
    listener: std::net::TcpListener,
    db: DatabaseConnection,
    max_connections: u32,
) -> std::io::Result<Server> {
    let handle = crate::telemetry::prometheus();
    let db = web::Data::new(db);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(db.clone())
            .route(
                "/metrics",
                web::get().to(move |db: web::Data<DatabaseConnection>| async move {
                    // Pool gauges are read at scrape time: no background task.
                    let (size, in_use) = crate::db::pool_stats(&db);
                    metrics::gauge!("db_pool_connections", "state" => "in_use").set(in_use);
                    metrics::gauge!("db_pool_connections", "state" => "idle")
                        .set(size.saturating_sub(in_use));
                    metrics::gauge!("db_pool_max_connections").set(max_connections);
                    handle.run_upkeep();
                    HttpResponse::Ok()
                        .content_type("text/plain; version=0.0.4; charset=utf-8")
                        .body(handle.render())
                }),
            )
            .default_service(web::to(|| async {
                super::json_error(actix_web::http::StatusCode::NOT_FOUND, "Not Found")
            }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}
