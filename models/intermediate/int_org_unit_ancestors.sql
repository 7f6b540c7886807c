{#- Each org unit with each of its ancestors and itself (read from the path /uid/uid/...),
    so a value entered at any unit reaches every level above it with one join. -#}
{{ config(materialized='table') }}
{%- set max_level = var('healthpipe_max_org_unit_level') | int -%}

{% for ancestor_level in range(1, max_level + 1) %}
select
    org_unit_id,
    level as org_unit_level,
    split_part(path, '/', {{ ancestor_level + 1 }}) as ancestor_id,
    {{ ancestor_level }} as ancestor_level
from {{ ref('int_org_units') }}
where level >= {{ ancestor_level }}
{% if not loop.last %}union all{% endif %}
{% endfor %}
