"""The layout property that makes generated files fast to read: nothing in them may be null."""

from pathlib import Path

import awkward as ak
import pyarrow as pa
import pyarrow.parquet as pq

from trainyard.datasets import schema


def nullable_parts(path: Path) -> list[str]:
    """Columns of the Parquet file at ``path`` that may hold nulls, or whose list elements may."""
    found = []
    for field in pq.read_schema(path):
        if field.nullable:
            found.append(field.name)
        if pa.types.is_list(field.type) and field.type.value_field.nullable:
            found.append(f"{field.name} elements")
    return found


def constituent_types(path: Path) -> set[str]:
    """The awkward types of the constituent columns, as weaver-core's Parquet reader sees them."""
    table = ak.from_arrow(pq.read_table(path, columns=list(schema.PARTICLE_COLUMNS)))
    return {str(table[name].type.content) for name in schema.PARTICLE_COLUMNS}
