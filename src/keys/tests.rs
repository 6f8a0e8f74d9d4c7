use super::*;

#[test]
fn scopes_parse_print_and_refuse_unknown_names() {
    let s = Scopes::parse("read, ingest").unwrap();
    assert!(s.contains(Scope::Read) && s.contains(Scope::Ingest));
    assert!(!s.contains(Scope::Admin) && !s.contains(Scope::Auth));
    assert_eq!(s.to_string(), "ingest,read");
    assert_eq!(
        Scopes::parse("auth ingest read admin").unwrap(),
        Scopes::all()
    );
    assert!(
        matches!(Scopes::parse("read,write"), Err(KeyError::Invalid(m)) if m.contains("'write'"))
    );
    assert!(Scopes::parse("").unwrap().is_empty());
}

#[test]
fn new_keys_check_their_fields() {
    let ok = NewKey::new(" svc ", Scopes::all(), Some(5), Some(100), None, None).unwrap();
    assert_eq!(ok.name, "svc");
    assert!(NewKey::new("", Scopes::all(), None, None, None, None).is_err());
    assert!(NewKey::new("x", Scopes::default(), None, None, None, None).is_err());
    assert!(NewKey::new("x", Scopes::all(), Some(0), None, None, None).is_err());
    assert!(NewKey::new("x", Scopes::all(), None, Some(-1), None, None).is_err());
    let past = crate::time::now() - chrono::Duration::seconds(1);
    assert!(NewKey::new("x", Scopes::all(), None, None, Some(past), None).is_err());
}

#[test]
fn secrets_have_the_prefix_and_256_bits() {
    let s = manage_secret();
    assert_eq!(s.len(), KEY_LEN);
    assert!(s.starts_with(KEY_PREFIX));
    assert_ne!(s, manage_secret());
}

fn manage_secret() -> String {
    // Same construction as `manage::new_secret`, through a created key below.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        crate::db::migrate(&db).await.unwrap();
        let keys = Keys::new(
            db,
            std::sync::Arc::new(crate::cache::MemoryCache::new()),
            ["configured-key"],
            true,
            None,
        );
        let created = keys
            .create(NewKey::new("t", Scopes::all(), None, None, None, None).unwrap())
            .await
            .unwrap();
        assert_eq!(created.key.prefix, created.secret[..12]);
        let caller = keys.authenticate(created.secret.as_bytes()).await.unwrap();
        assert_eq!(caller.key_id, Some(created.key.id));
        assert!(
            keys.authenticate(b"configured-key")
                .await
                .unwrap()
                .key_id
                .is_none()
        );
        keys.revoke(created.key.id).await.unwrap();
        assert!(matches!(
            keys.authenticate(created.secret.as_bytes()).await,
            Err(KeyError::Revoked)
        ));
        created.secret
    })
}
