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

    /// Adds a column: a value per row (an `Option` makes it nullable).
    pub(crate) fn col<T: ColumnValue>(
        self,
        name: &'static str,
        values: impl IntoIterator<Item = T>,
    ) -> Self {
        self.with(name, T::column(values.into_iter().collect()))
    }

    /// The column names in order, for an `INSERT INTO t (…)` list.
    pub(crate) fn names(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(n, _)| *n).collect();
        names.join(", ")
    }
}

/// A value that goes into a bulk column; its `Option` goes into a nullable one.
pub(crate) trait ColumnValue: Sized {
    fn column(values: Vec<Self>) -> Column;
}

macro_rules! column_value {
    ($variant:ident: $t:ty, $into:expr) => {
        impl ColumnValue for $t {
            fn column(values: Vec<Self>) -> Column {
                Column::$variant(values.into_iter().map(|v| Some($into(v))).collect())
            }
        }
        impl ColumnValue for Option<$t> {
            fn column(values: Vec<Self>) -> Column {
                Column::$variant(values.into_iter().map(|v| v.map($into)).collect())
            }
        }
    };
}

column_value!(Uuid: Uuid, std::convert::identity);
column_value!(Int: i64, std::convert::identity);
column_value!(Text: String, std::convert::identity);
column_value!(Text: &str, String::from);
column_value!(Bytes: Vec<u8>, std::convert::identity);
column_value!(Bool: bool, std::convert::identity);
column_value!(Amount: i128, std::convert::identity);
