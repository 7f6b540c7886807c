{#- Every indicator definition, documented; is_computable is false when an operand names a
    data element the warehouse does not hold (then the indicator has no values). -#}
select
    indicator_id,
    name,
    domain,
    description,
    numerator,
    denominator,
    factor,
    unit,
    target,
    direction,
    is_computable,
    problem,
    source_file
from {{ ref('stg_healthpipe__indicators') }}
