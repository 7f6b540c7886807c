{#- The org-unit hierarchy (country -> region -> district -> facility, or deeper) with one
    id and name column per ancestor level. -#}
{%- set named_levels = 6 -%}

with org_units as (

    select * from {{ ref('int_org_units') }}

),

ancestors as (

    select a.org_unit_id, a.ancestor_level, a.ancestor_id, o.name as ancestor_name
    from {{ ref('int_org_unit_ancestors') }} as a
    left join org_units as o on o.org_unit_id = a.ancestor_id

)

select
    ou.org_unit_id,
    ou.code,
    ou.name,
    ou.short_name,
    ou.level,
    ou.parent_id,
    ou.path,
    ou.geometry,
    ou.opened_at,
    ou.closed_at,
    ou.closed_at is not null as is_closed,
    {%- for level in range(1, named_levels + 1) %}
    max(case when a.ancestor_level = {{ level }} then a.ancestor_id end) as level_{{ level }}_id,
    max(case when a.ancestor_level = {{ level }} then a.ancestor_name end) as level_{{ level }}_name,
    {%- endfor %}
    ou.source_name as source
from org_units as ou
left join ancestors as a on a.org_unit_id = ou.org_unit_id
group by
    ou.org_unit_id, ou.code, ou.name, ou.short_name, ou.level, ou.parent_id, ou.path,
    ou.geometry, ou.opened_at, ou.closed_at, ou.source_name
