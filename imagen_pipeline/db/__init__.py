"""The imagen database: connections and the shipped SQL migrations."""
