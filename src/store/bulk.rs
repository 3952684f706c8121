//! Many rows in one statement, described once for both backends. The shared SQL names the
//! columns and the statement around them; each backend's `bulk` turns the rows into its own
//! row set: `UNNEST` of one array per column on PostgreSQL (one plan whatever the count),
//! multi-row `VALUES` on SQLite (which has no arrays), sliced under its bind limit.

use uuid::Uuid;

/// The values of one column, one per row.
pub(crate) enum Column {
    Uuid(Vec<Option<Uuid>>),
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Bytes(Vec<Option<Vec<u8>>>),
    Bool(Vec<Option<bool>>),
    /// Base units: TEXT on SQLite, NUMERIC on PostgreSQL.
    Amount(Vec<Option<i128>>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Uuid(v) => v.len(),
            Column::Int(v) => v.len(),
            Column::Text(v) => v.len(),
            Column::Bytes(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::Amount(v) => v.len(),
        }
    }

    /// PostgreSQL's element type, for the array cast.
    pub(crate) fn sql_type(&self) -> &'static str {
        match self {
            Column::Uuid(_) => "uuid",
            Column::Int(_) => "bigint",
            Column::Text(_) => "text",
            Column::Bytes(_) => "bytea",
            Column::Bool(_) => "bool",
            Column::Amount(_) => "numeric",
        }
    }
}

/// Rows column by column, each column named as the statement around them reads it (`u.name`).
/// A column is a value per row; a value the same for every row is a column too, so the
/// statement needs no other binds and reads the same on both backends.
#[derive(Default)]
pub(crate) struct BulkRows {
    pub(crate) columns: Vec<(&'static str, Column)>,
}

impl BulkRows {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn len(&self) -> usize {
        self.columns.first().map_or(0, |(_, c)| c.len())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with(mut self, name: &'static str, column: Column) -> Self {
        debug_assert!(
            self.columns.is_empty() || column.len() == self.len(),
            "column {name} has {} rows, not {}",
            column.len(),
            self.len()
        );
        self.columns.push((name, column));
        self
    }

    pub(crate) fn uuid(self, name: &'static str, v: impl IntoIterator<Item = Uuid>) -> Self {
        self.opt_uuid(name, v.into_iter().map(Some))
    }

    pub(crate) fn opt_uuid(
        self,
        name: &'static str,
        v: impl IntoIterator<Item = Option<Uuid>>,
    ) -> Self {
        self.with(name, Column::Uuid(v.into_iter().collect()))
    }

    pub(crate) fn int(self, name: &'static str, v: impl IntoIterator<Item = i64>) -> Self {
        self.opt_int(name, v.into_iter().map(Some))
    }

    pub(crate) fn opt_int(
        self,
        name: &'static str,
        v: impl IntoIterator<Item = Option<i64>>,
    ) -> Self {
        self.with(name, Column::Int(v.into_iter().collect()))
    }

    pub(crate) fn text<S: Into<String>>(
        self,
        name: &'static str,
        v: impl IntoIterator<Item = S>,
    ) -> Self {
        self.opt_text(name, v.into_iter().map(|s| Some(s.into())))
    }

    pub(crate) fn opt_text(
        self,
        name: &'static str,
        v: impl IntoIterator<Item = Option<String>>,
    ) -> Self {
        self.with(name, Column::Text(v.into_iter().collect()))
    }

    pub(crate) fn bytes(
        self,
        name: &'static str,
        v: impl IntoIterator<Item = Option<Vec<u8>>>,
    ) -> Self {
        self.with(name, Column::Bytes(v.into_iter().collect()))
    }

    pub(crate) fn bool(
        self,
        name: &'static str,
        v: impl IntoIterator<Item = Option<bool>>,
    ) -> Self {
        self.with(name, Column::Bool(v.into_iter().collect()))
    }

    pub(crate) fn amount(
        self,
        name: &'static str,
        v: impl IntoIterator<Item = Option<i128>>,
    ) -> Self {
        self.with(name, Column::Amount(v.into_iter().collect()))
    }

    /// The column names in order, for an `INSERT INTO t (…)` list.
    pub(crate) fn names(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(n, _)| *n).collect();
        names.join(", ")
    }
}
