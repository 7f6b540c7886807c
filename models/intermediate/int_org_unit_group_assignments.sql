{#- Each org unit's group in each group set (facility type, ownership ...). -#}
with set_members as (

    select distinct
        s.org_unit_group_set_id,
        s.column_name,
        s.name as group_set_name,
        s.group_id
    from (
        select
            org_unit_group_set_id,
            column_name,
            name,
            {{ hp_unnest_json_text_array('group_ids') }} as group_id
        from {{ ref('int_org_unit_group_sets') }}
        where group_ids is not null
    ) as s

),

groups as (

    select org_unit_group_id, name
    from {{ ref('stg_dhis2__organisation_unit_groups') }}

)

select distinct
    m.org_unit_id,
    s.org_unit_group_set_id,
    s.column_name,
    s.group_set_name,
    g.org_unit_group_id,
    g.name as org_unit_group_name
from {{ ref('int_org_unit_group_members') }} as m
join groups as g on g.org_unit_group_id = m.org_unit_group_id
join set_members as s on s.group_id = g.org_unit_group_id
