{#- fct_data_values for publication: counts from 1 to the small-cell threshold minus 1 are
    masked (value and value_text NULL, is_suppressed true). Their totals are published
    elsewhere (pub_indicator_values per parent org unit, coarser period and over
    disaggregations), so the complementary cells that keep a masked count from being
    recovered from those totals are masked too (macros/small_cell_suppression.sql).
    Reporting and data-quality counts (pseudo data elements) describe reports, not people:
    never masked. -#}
with masks as (

    {{ hp_public_masks('pub_data_values') }}

)

select
    v.data_element_id,
    v.category_option_combo_id,
    v.attribute_option_combo_id,
    v.org_unit_id,
    v.period_id,
    v.period_type,
    v.period_start_date,
    v.period_end_date,
    case when m.is_masked then null else v.value end as value,
    case when m.is_masked then null else v.value_text end as value_text,
    v.source,
    v.data_set_id,
    v.is_derived,
    coalesce(m.is_masked, false) as is_suppressed
from {{ ref('fct_data_values') }} as v
left join masks as m
    on m.key_1 = v.source
    and m.key_2 = v.data_element_id
    and m.key_3 = coalesce(v.category_option_combo_id, '')
    and m.key_4 = coalesce(v.attribute_option_combo_id, '')
    and m.org_unit_id = v.org_unit_id
    and m.period_id = v.period_id
