/// The catalog's tables, as numbered migrations (see `Migrations`).
enum CatalogSchema {
    static let migrations: [Migrations.Migration] = []
}
