{#- Every computable indicator at every org-unit level and every period type at or above its
    data's own, like DHIS2 analytics. value = numerator / denominator * factor, NULL when the
    denominator is missing or zero. -#}
with evaluated as (

    {{ hp_indicator_values_sql(
        ref('int_data_values_aggregated'),
        ref('stg_healthpipe__indicators'),
        ref('stg_healthpipe__indicator_operands')) }}

)

select
    e.indicator_id,
    i.domain,
    e.org_unit_id,
    e.org_unit_level,
    e.period_id,
    e.period_type,
    e.numerator,
    e.denominator,
    i.factor,
    case
        when e.denominator is null or e.denominator = 0 then null
        else e.numerator / e.denominator * i.factor
    end as value
from evaluated as e
join {{ ref('stg_healthpipe__indicators') }} as i on i.indicator_id = e.indicator_id
where e.numerator is not null or e.denominator is not null
