{#- The org units each data set is assigned to: every one of them is expected to report
    each period (the denominator of reporting completeness). -#}
select distinct
    assignment.data_set_id,
    assignment.org_unit_id
from (
    select
        data_set_id,
        {{ hp_unnest_json_text_array('org_unit_ids') }} as org_unit_id
    from {{ ref('int_data_sets') }}
    where org_unit_ids is not null
) as assignment
